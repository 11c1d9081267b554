"""Exercises of notebook 06 (the inference engine): ``ex.check("6.1", answer)`` ... ``"6.5"`` (6.2 sits in the
deep dive 06a; 6.5 is a prediction checked against the learner's own measurement).

Each check recomputes the right answer with the engine's own code (the block manager's arithmetic, the
slot mapping, the prefix cache lookup, ``SamplingParams``), so it tests the idea, not a copied number.
"""
from __future__ import annotations

import numbers

from . import (as_number as _number, compare_guess,  # noqa: F401  (compare_guess: the notebook imports it from here)
               exercise)

EX61 = {"prompt": 100, "max_tokens": 30, "block_size": 16}
EX62 = {"block_table": [7, 2, 9], "block_size": 16, "position": 37}
EX63 = {"shared": 50, "block_size": 16}
EX65 = {"factor": 3.0}


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

    answer_61 = -(-(100 + 30 - 1) // 16)     # ceil(129 / 16) = 9 blocks = 144 slots, 15 of them never filled
    # the engine's own arithmetic: engine.block_manager.blocks_needed(129)

Reserving the maximum up front would not be much worse here, but a system that reserved the model's whole
context (512 tokens = 32 blocks) would hold 3.5 times as much memory as this request ever uses.
''')
def _verify_blocks(answer):
    value = _int(answer)
    prompt, max_tokens, bs = EX61["prompt"], EX61["max_tokens"], EX61["block_size"]
    tokens = prompt + max_tokens - 1
    expected = -(-tokens // bs)
    if value == expected:
        return True, f"{tokens} tokens need {expected} blocks of {bs}; the last block is part full."
    if value == tokens // bs:
        return False, "That rounds down: a partly filled last block is still a whole block."
    if value in (tokens, tokens + 1):
        return False, "That counts tokens; the question asks for blocks."
    if value in (expected * bs, -(-(tokens + 1) // bs) * bs):
        return False, "That counts slots (blocks x block_size); the question asks for blocks."
    if value == -(-prompt // bs):
        return False, "That holds only the prompt; the generated tokens' keys and values are stored in blocks too."
    if value == -(-max_tokens // bs):
        return False, "That holds only the generated tokens; the prompt's keys and values are stored too."
    if value == 512 // bs:
        return False, ("That reserves the model's whole context up front; a paged cache takes blocks only as the "
                       "sequence grows.")
    return False, "Count the tokens whose keys and values are stored, then the whole blocks of block_size they occupy."


@exercise(
    "6.2",
    question=("A sequence's block table is [7, 2, 9] and block_size is 16. Which slot of the KV pool holds the keys "
              "and values of its token at position 37 (slot = physical block x block_size + offset)? Give an int."),
    solution='''
Position 37 is in logical block 37 // 16 = 2, at offset 37 % 16 = 5. The block table maps logical block 2
to physical block 9, so:

    sol_table, sol_bs, sol_pos = [7, 2, 9], 16, 37
    answer_62 = sol_table[sol_pos // sol_bs] * sol_bs + sol_pos % sol_bs     # 9 * 16 + 5 = 149
    # the engine's own: from inferlab.engine.paged_cache import slot_of; slot_of(sol_table, sol_pos, sol_bs)

This is the slot mapping the engine computes for every new token before writing its keys and values.
''')
def _verify_slot(answer):
    from ..engine.paged_cache import slot_of
    value = _int(answer)
    table, bs, pos = EX62["block_table"], EX62["block_size"], EX62["position"]
    expected = slot_of(table, pos, bs)
    logical, offset, physical = pos // bs, pos % bs, table[pos // bs]
    if value == expected:
        return True, f"logical block {logical} -> physical block {physical}, offset {offset}: slot {expected}."
    if value == pos:
        return False, "That is the position itself; the slot is found through the block table."
    if value == physical:
        return False, "That is the physical block; the question asks for the slot in the pool."
    if value == logical:
        return False, "That is the logical block (the index into the block table), not a slot."
    if value == offset:
        return False, "That is the offset within the block only; the block itself starts further into the pool."
    if value == physical * bs:
        return False, "That is where the right block starts; add the token's offset within it."
    if value == physical * bs + pos:
        return False, "Add the offset within the block (position % block_size), not the whole position."
    if value in (physical * bs + offset - 1, physical * bs + offset + 1):
        return False, "Off by one: positions and offsets count from 0."
    if value in (t * bs + offset for t in table):
        return False, "That is the right offset in the wrong block: logical block = position // block_size, from 0."
    return False, ("Find the logical block and the offset of position 37, look the block up in the table, then count "
                   "slots from the start of the pool.")


@exercise(
    "6.3",
    question=("Two prompts start with the same 50 tokens and then differ. The first has been served; block_size is "
              "16 and prefix caching is on. How many of the second prompt's tokens are found in the prefix cache "
              "(not recomputed)? Give an int."),
    solution='''
Only full blocks are hashed and shared, each hash chained over the whole prefix before it. The shared 50
tokens fill 50 // 16 = 3 blocks; the 4th block mixes shared and different tokens, so its hash differs:

    answer_63 = (50 // 16) * 16      # 48 tokens reused, the rest of the prompt is computed
    # check it with the engine: the second request's output has num_cached_tokens == 48

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
    if value == shared // bs or value == -(-shared // bs):
        return False, "That counts blocks; the question asks for tokens."
    if value == -(-shared // bs) * bs:
        return False, "That rounds up: the block where the prompts part ways is not the same in both."
    if value == 0:
        return False, "Some blocks are shared: a block filled only with the common opening hashes the same in both."
    if 0 < value < expected and value % bs == 0:
        return False, "Every block that lies wholly inside the common opening is shared, the last full one too."
    return False, ("Only whole blocks are shared: count the tokens in the blocks that lie entirely inside the common "
                   "opening.")


@exercise(
    "6.4",
    question=("Build the il.SamplingParams for a greedy answer of at most 20 tokens that stops at a blank line "
              "('\\n\\n'). Give the SamplingParams object."),
    solution='''
The names are vLLM's: temperature 0 is greedy, max_tokens counts generated tokens, stop ends the answer
(the text is cut before it):

    import inferlab as il
    answer_64 = il.SamplingParams(temperature=0.0, max_tokens=20, stop="\\n\\n")
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
    stops = set(answer.stop or ())
    if "\n\n" not in stops:
        if "\n" in stops:
            return False, "stop='\\n' ends the answer at any line break, not only at a blank line."
        return False, "Nothing ends the answer at a blank line yet: that is what stop is for."
    if stops != {"\n\n"}:
        others = sorted(stops - {"\n\n"})
        return False, f"The answer would also end at {others}; only a blank line should end it."
    return True, "Greedy, 20 tokens at most, cut at a blank line (greedy ignores top_k and top_p)."


def _gain(measured):
    """The measured gain as (median, low, high): a ``timing.Ratio`` or a plain number."""
    if hasattr(measured, "median") and hasattr(measured, "low"):
        return float(measured.median), float(measured.low), float(measured.high)
    value = _number(measured)
    return value, value, value


@exercise(
    "6.5",
    question=("Predict, before serving the workload: with the same bytes of KV cache, how many times static "
              "batching's throughput will the engine (paged KV cache, continuous batching) reach? Give a number; it "
              "is checked against your own measurement."),
    measured="vs_static",
    solution='''
Static batching reserves, for every row, the batch's longest prompt plus its longest answer, and holds every
row until the longest answer is done; the paged pool takes a block only when a sequence needs one and frees
it when the sequence ends. With long-tailed answers, about half of a static batch's reservation holds no
token, against a few per cent for paging, so the same memory holds about twice as many running sequences.
More rows per step is more throughput, though a step of twice the rows costs somewhat more (lesson 04):

    sol_static_holding = 0.5     # share of static batching's reserved slots that hold a token
    sol_paged_holding = 0.95     # paging: only each sequence's last block is part empty
    sol_more_rows = sol_paged_holding / sol_static_holding   # about 2x the sequences in the same memory
    sol_step_cost = 1.3          # a step of twice the rows, against a step of the rows static batching has
    answer_65 = sol_more_rows / sol_step_cost                # about 1.5x

The vLLM paper measured 2-4x against earlier systems on GPUs, where a bigger batch costs even less per row.
''')
def _verify_gain(answer, measured):
    value = _number(answer)
    median, low, high = _gain(measured)
    factor = EX65["factor"]
    if high < 1 and value <= 1 and max(value / median, median / value) <= factor:
        return True, (f"You predicted {value:.3g}x and measured {median:.2f}x (round by round {low:.2f}-{high:.2f}x): "
                      "on this machine the engine's steps cost more than its extra rows gained.")
    if value <= 1:
        return False, ("With the same memory the paged pool holds more running sequences than static batching's "
                       "padded reservations, and no finished answer waits for its batch: for a ratio of 1 or less, "
                       "those extra rows would have to cost as much as they serve.")
    if low <= 1 or high > 1.5 * low:   # no clear gain, or rounds that disagree: a busy machine
        return True, (f"Your measurement was not clear ({median:.2f}x, round by round {low:.2f}-{high:.2f}x), so your "
                      "reasoning is accepted; run the serving cell again when the machine is quiet.")
    if max(value / median, median / value) <= factor:
        return True, (f"You predicted {value:.3g}x and measured {median:.2f}x (round by round {low:.2f}-{high:.2f}x): "
                      f"the right side of 1 and within a factor {factor:g}.")
    if value > median:
        return False, (f"Too optimistic: you measured {median:.2f}x. The engine fits more sequences, but a step of more "
                       "rows costs more than a step of fewer, and static batching's batches are not all empty space.")
    return False, (f"Too pessimistic: you measured {median:.2f}x. Count how much of a static batch's reservation "
                   "holds no token (padding to the longest prompt, room for the longest answer, rows held until the "
                   "batch ends): the paged pool fills that memory with more sequences.")
