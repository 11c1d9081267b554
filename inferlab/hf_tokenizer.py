"""A real checkpoint's tokenizer behind the methods the lessons call on ``BPETokenizer`` (issue 17).

``il.load_hf`` returns an ``HFTokenizer``: the ``tokenizers`` library reads ``tokenizer.json`` and does the
encoding and decoding; this class adds what the package asks of a tokenizer besides (``vocab``: the bytes
of every token, which ``generate``, the engine and the plots use to show text token by token).

Two kinds of ``tokenizer.json`` are common. Byte-level BPE (GPT-2, Llama 3, SmolLM, Qwen2) writes each byte
as one printable character, so a token's bytes are its characters mapped back. SentencePiece-style BPE
(Llama 2, TinyLlama, Mistral) writes a space as "▁" and a byte it has no token for as ``<0xNN>``.
"""
from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

SPACE_MARK = "▁"   # SentencePiece's visible space


def byte_level_alphabet() -> dict[str, int]:
    """Character -> byte of GPT-2's byte-level BPE: printable Latin-1 bytes stand for themselves, the other
    bytes (controls, space, ...) for the characters from U+0100 on, in order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    others = (b for b in range(256) if b not in chars)
    chars.update((b, chr(256 + i)) for i, b in enumerate(others))
    return {c: b for b, c in chars.items()}


def _decoder_types(spec) -> list[dict]:
    """The decoder steps of a ``tokenizer.json`` (a Sequence flattened), as their JSON dicts."""
    if not spec:
        return []
    if spec.get("type") == "Sequence":
        return [step for sub in spec.get("decoders", []) for step in _decoder_types(sub)]
    return [spec]


class HFTokenizer:
    """``tok.encode(text) -> list[int]``, ``tok.decode(ids) -> str``, ``tok.vocab``, ``tok.vocab_size``, as
    ``BPETokenizer``; ``bos_id``/``eos_id`` from the checkpoint's config (None when it names none)."""

    def __init__(self, path, bos_id: int | None = None, eos_id: int | None = None):
        from tokenizers import Tokenizer

        self.path = Path(path)
        spec = json.loads(self.path.read_text(encoding="utf-8"))
        self._tok = Tokenizer.from_str(json.dumps(spec))
        # a tokenizer.json may carry a truncation or padding setting: a prompt is never cut or padded here
        self._tok.no_truncation()
        self._tok.no_padding()
        steps = _decoder_types(spec.get("decoder"))
        self.byte_level = any(s.get("type") == "ByteLevel" for s in steps)
        self.space_mark = any(s.get("type") == "Metaspace" or (s.get("type") == "Replace"
                                                                and s.get("pattern", {}).get("String") == SPACE_MARK)
                              for s in steps)
        self.byte_fallback = bool((spec.get("model") or {}).get("byte_fallback"))
        self.bos_id, self.eos_id = bos_id, eos_id

    def __repr__(self):
        return f"HFTokenizer({self.path}, vocab_size={self.vocab_size})"

    @property
    def vocab_size(self) -> int:
        """One more than the largest token id (the model's embedding may have more rows, unused)."""
        return len(self.vocab)

    @cached_property
    def vocab(self) -> list[bytes]:
        """The bytes of every token, by id (special and added tokens: their text, e.g. ``b"</s>"``)."""
        by_id = {i: t for t, i in self._tok.get_vocab(with_added_tokens=True).items()}
        added = {i: t.content for i, t in self._tok.get_added_tokens_decoder().items()}
        alphabet = byte_level_alphabet() if self.byte_level else None
        out = []
        for i in range(max(by_id) + 1):
            token = by_id.get(i)
            if i in added:
                out.append(added[i].encode())
            elif token is None:   # a gap in the ids
                out.append(f"<{i}>".encode())
            elif alphabet is not None and all(c in alphabet for c in token):
                out.append(bytes(alphabet[c] for c in token))
            elif self.byte_fallback and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                out.append(bytes([int(token[3:5], 16)]))
            elif self.space_mark:
                out.append(token.replace(SPACE_MARK, " ").encode())
            else:   # some other scheme: the library's own text of the token alone
                out.append(self._tok.decode([i], skip_special_tokens=False).encode())
        return out

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``, with the special tokens the checkpoint's tokenizer adds (a beginning-of-text
        ``<s>`` for Llama 2 and 3, nothing for GPT-2, SmolLM or Qwen2), as ``transformers``' tokenizers do."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of ``ids``, special tokens left out, so ``decode(encode(text)) == text`` (for a text that does
        not itself spell a special token such as ``<|endoftext|>``)."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got {bad[:5]}")
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_strings(self, ids) -> list[str]:
        """Each token on its own (for display; partial UTF-8 shows as U+FFFD)."""
        return [self.vocab[int(i)].decode("utf-8", errors="replace") for i in ids]
