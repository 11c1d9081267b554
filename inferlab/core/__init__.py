"""The model a learner reads in one sitting: config, tokenizer, model, kvcache, sampling, generate, train,
pretrained, corpus, device. ``il.GPT``, ``il.generate``, ``il.KVCache`` and the rest of the public names come
from here (``inferlab/__init__.py``)."""
