"""Exercises of notebook 06 (the inference engine): ``ex.check("6.1", answer)`` ... ``"6.4"``.

Each check recomputes the right answer with the engine's own code (the block manager's arithmetic, the
slot mapping, the prefix cache lookup, ``SamplingParams``), so it tests the idea, not a copied number.
"""
from __future__ import annotations

import numbers

from . import exercise

EX61 = {"prompt": 100, "max_tokens": 30, "block_size": 16}
EX62 = {"block_table": [7, 2, 9], "block_size": 16, "position": 37}
EX63 = {"shared": 50, "block_size": 16}


def _int(answer) -> int:
    if isinstance(answer, bool) or not isinstance(answer, numbers.Integral):
        if isinstance(answer, float) and answer.is_integer():
            return int(answer)
        raise TypeError(f"expected a whole number, got {type(answer).__name__}")
    return int(answer)


@exercise(
    "6.1",
    question=("A request has a 100-token prompt and max_tokens=30, and the engine's block_size is 16. How many KV "
              "blocks does it hold at most? (The last generated token is never fed back, so its keys and values are "
              "never stored.) Give an int."),
    solution='''
The request stores keys/values for every token it feeds through the model: the prompt and every generated
token but the last, 100 + 30 - 1 = 129 tokens. Blocks are taken whole, so round up:

    answer = -(-(100 + 30 - 1) // 16)     # ceil(129 / 16) = 9 blocks = 144 slots, 15 of them never filled
    # the engine's own arithmetic: engine.block_manager.blocks_needed(129)

Reserving the maximum up front would not be much worse here, but a system that reserved the model's whole
context (512 tokens = 32 blocks) would hold 3.5 times as much memory as this request ever uses.
''')
def _verify_blocks(answer):
    value = _int(answer)
    tokens = EX61["prompt"] + EX61["max_tokens"] - 1
    expected = -(-tokens // EX61["block_size"])
    if value == expected:
        return True, f"{tokens} tokens need {expected} blocks of {EX61['block_size']}; the last block is part full."
    if value == tokens // EX61["block_size"]:
        return False, "That rounds down: the last, partly filled block is still a whole block."
    if value in (tokens, tokens + 1):
        return False, "That counts tokens; divide by the block size and round up."
    return False, "Hint: ceil((prompt + max_tokens - 1) / block_size)."


@exercise(
    "6.2",
    question=("A sequence's block table is [7, 2, 9] and block_size is 16. Which slot of the KV pool holds the keys "
              "and values of its token at position 37 (slot = physical block x block_size + offset)? Give an int."),
    solution='''
Position 37 is in logical block 37 // 16 = 2, at offset 37 % 16 = 5. The block table maps logical block 2
to physical block 9, so:

    table, bs, pos = [7, 2, 9], 16, 37
    answer = table[pos // bs] * bs + pos % bs     # 9 * 16 + 5 = 149
    # the engine's own: from inferlab.engine.paged_cache import slot_of; slot_of(table, pos, bs)

This is the slot mapping the engine computes for every new token before writing its keys and values.
''')
def _verify_slot(answer):
    from ..engine.paged_cache import slot_of
    value = _int(answer)
    table, bs, pos = EX62["block_table"], EX62["block_size"], EX62["position"]
    expected = slot_of(table, pos, bs)
    if value == expected:
        return True, f"logical block {pos // bs} -> physical block {table[pos // bs]}, offset {pos % bs}: slot {expected}."
    if value == pos:
        return False, "That is the position; the slot goes through the block table."
    if value == (pos // bs) * bs + pos % bs or value == table[pos // bs]:
        return False, "Look up the physical block in the table, then multiply by block_size and add the offset."
    if value == table[pos // bs - 1] * bs + pos % bs or value == table[pos % len(table)] * bs + pos % bs:
        return False, "Logical block = position // block_size (counting from 0)."
    return False, "Hint: block_table[position // block_size] * block_size + position % block_size."


@exercise(
    "6.3",
    question=("Two prompts start with the same 50 tokens and then differ. The first has been served; block_size is "
              "16 and prefix caching is on. How many of the second prompt's tokens are found in the prefix cache "
              "(not recomputed)? Give an int."),
    solution='''
Only full blocks are hashed and shared, each hash chained over the whole prefix before it. The shared 50
tokens fill 50 // 16 = 3 blocks; the 4th block mixes shared and different tokens, so its hash differs:

    answer = (50 // 16) * 16      # 48 tokens reused, the rest of the prompt is computed
    # check it with the engine: engine.requests[second_id].metrics.num_prefix_cached_tokens

Smaller blocks share more of a prefix, but mean more blocks to look up and gather.
''')
def _verify_prefix(answer):
    value = _int(answer)
    shared, bs = EX63["shared"], EX63["block_size"]
    expected = (shared // bs) * bs
    if value == expected:
        return True, f"{shared // bs} full blocks = {expected} tokens; the part-full block is not shared."
    if value == shared:
        return False, "Only full blocks are cached: the block that mixes shared and new tokens hashes differently."
    if value == shared // bs:
        return False, "That is the number of blocks; the question asks for tokens."
    if value == -(-shared // bs) * bs:
        return False, "That rounds up: the 4th block is not identical in both prompts."
    return False, "Hint: (shared tokens // block_size) * block_size."


@exercise(
    "6.4",
    question=("Build the il.SamplingParams for a greedy answer of at most 20 tokens that stops at a blank line "
              "('\\n\\n'). Give the SamplingParams object."),
    solution='''
The names are vLLM's: temperature 0 is greedy, max_tokens counts generated tokens, stop ends the answer
(the text is cut before it):

    answer = il.SamplingParams(temperature=0.0, max_tokens=20, stop="\\n\\n")
    # the same line works with vLLM: from vllm import SamplingParams
''')
def _verify_params(answer):
    from ..engine.request import SamplingParams
    if not isinstance(answer, SamplingParams):
        return False, f"Give an il.SamplingParams, not a {type(answer).__name__}."
    if answer.temperature != 0:
        return False, f"temperature={answer.temperature} samples; greedy is temperature=0."
    if answer.max_tokens != 20:
        return False, f"max_tokens={answer.max_tokens}; the answer should have at most 20 tokens."
    if not answer.stop or "\n\n" not in answer.stop:
        return False, "Add stop='\\n\\n' so the answer ends at a blank line."
    if answer.top_k is not None or answer.top_p is not None:
        return False, "top_k/top_p change nothing when greedy; leave them None."
    return True, "Greedy, 20 tokens at most, cut at a blank line."
