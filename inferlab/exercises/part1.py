"""Exercises of notebook 01 (training vs inference): ``ex.check("1.1", answer)`` ... ``"1.4"``.

Each verify function recomputes the right answer from the package itself (the model config,
``cost_per_million_tokens``), so the check tests the idea, not a number copied from the notebook.
"""
from __future__ import annotations

from . import (as_number as _number, compare_guess,  # noqa: F401  (compare_guess: the notebook imports it from here)
               exercise, is_close as _close)

# The small model notebook 01 trains live in section 2 (its cell builds ``small_cfg`` with these values;
# tests/test_part1.py checks that the notebook and this dict agree).
LIVE_MODEL = dict(arch="llama", vocab_size=2048, d_model=96, n_layer=2, n_head=4, d_ff=256, max_seq_len=128)


def live_model_config():
    from ..core.config import ModelConfig

    return ModelConfig(name="small", **LIVE_MODEL)


def adamw_state_bytes(config=None) -> int:
    """Bytes of AdamW state (two float32 values per weight: m and v) for a config or config name
    (default: the small model notebook 01 trains)."""
    from ..core.config import get_config
    from ..core.model import GPT

    if config is None:
        config = live_model_config()
    elif isinstance(config, str):
        config = get_config(config)
    return 2 * GPT(config).weight_bytes()


@exercise(
    "1.1",
    question=("How many bytes of optimizer state did AdamW keep while it trained `small`, the model you trained "
              "in section 2 (float32 weights)? Work it out from `small`: the table is the bundled model's. "
              "Give an int."),
    solution='''
AdamW keeps two running averages per weight (the first moment m and the second moment v), each the
same shape and dtype as the weight. So its state is 2 x the weight bytes of the model it trains:

    answer = 2 * sum(p.numel() * p.element_size() for p in small.parameters())   # = 2 * small.weight_bytes()

small.parameters() lists each weight once (a tied embedding / output matrix too), just as the
optimizer sees them; element_size() is 4 bytes for float32.
''')
def _verify_adamw_state(answer):
    value = _number(answer)
    expected = adamw_state_bytes()
    weight_bytes = expected // 2
    bundled = adamw_state_bytes("inferlab-main")
    if _close(value, expected):
        return True, f"{expected:,} bytes = 2 x the {weight_bytes:,} bytes of small's weights (m and v for every weight)."
    if _close(value, bundled) or _close(value, bundled / 2):
        return False, "That is the bundled model's figure from the table; the question is about `small`, from section 2."
    if _close(value, weight_bytes):
        return False, "That is the size of small's weights once. AdamW keeps two numbers per weight."
    if _close(value, expected / 4) or _close(value, expected / 8):
        return False, "That looks like a count of values, not bytes: a float32 takes 4 bytes."
    if _close(value, 1.5 * expected) or _close(value, 2 * expected):
        return False, "Count the optimizer state only, not the weights or gradients next to it."
    return False, "Hint: count small's weight bytes (small.weight_bytes()) and think how many copies AdamW keeps."


def _fake_result(tpot_s: float, n_tokens: int, ttft_s: float):
    from ..core.generate import GenerationResult

    total = ttft_s + tpot_s * (n_tokens - 1)
    return GenerationResult(text="x" * n_tokens, tokens=list(range(n_tokens)), prompt_tokens=[1, 2, 3],
                            ttft_s=ttft_s, tpot_s=tpot_s, total_s=total, finish_reason="length",
                            step_times_s=[ttft_s] + [tpot_s] * (n_tokens - 1))


@exercise(
    "1.2",
    question=("Write a function of a GenerationResult that returns its decode speed in tokens per second "
              "(from res.tpot_s), e.g. answer = lambda res: ..."),
    solution='''
The time per output token (tpot) is the seconds one decode step takes, so one second holds
1 / tpot of them:

    answer = lambda res: 1.0 / res.tpot_s

len(res.tokens) / res.total_s is a different number: it also counts the time to the first token
(the prompt's prefill), so it is lower for short answers.
''')
def _verify_tokens_per_s(answer):
    if not callable(answer):
        return False, "Give a function, e.g. answer = lambda res: ... (it receives a GenerationResult)."
    cases = [_fake_result(0.02, 10, 0.5), _fake_result(0.005, 40, 0.05), _fake_result(0.25, 3, 1.0)]
    for res in cases:
        expected = 1.0 / res.tpot_s
        got = _number(answer(res))
        if not _close(got, expected):
            if _close(got, len(res.tokens) / res.total_s):
                return False, ("That is the whole request's rate, including the wait for the first token. "
                               "Use the time per output token.")
            if _close(got, res.tpot_s):
                return False, "That is seconds per token; tokens per second is its inverse."
            if _close(got, res.tpot_s * 1e3):
                return False, "That is milliseconds per token; tokens per second is the inverse of seconds per token."
            return False, (f"For a result with tpot_s = {res.tpot_s} s your function gave {got:g}: how many steps "
                           "of that length fit in one second?")
    return True, "1 / tpot_s: the decode speed one user sees once the first token has arrived."


COST_CASE = {"tokens_per_s": 2500.0, "watts": 700.0, "price_per_kwh": 0.15, "hardware_per_hour": 2.5}


@exercise(
    "1.3",
    question=("A GPU server draws 700 W, electricity costs 0.15 per kWh, the server rents for 2.50 per hour, "
              "and with many users batched together it generates 2,500 tokens/s. "
              "What does one million generated tokens cost? Give a number."),
    solution='''
A million tokens at 2,500 tokens/s take 1e6 / 2500 = 400 s = 0.111 hours.
Per hour the server costs 0.7 kW x 0.15 = 0.105 (electricity) + 2.50 (rent) = 2.605.

    sol_hours = 1e6 / 2500 / 3600
    answer = sol_hours * (700 / 1000 * 0.15 + 2.5)      # about 0.289
    # the same with the package: inferlab.lessons.part1.cost_per_million_tokens(2500, 700, 0.15, 2.5)

The rent dwarfs the electricity: what makes serving cheap is tokens per second per machine.
''')
def _verify_cost(answer):
    from ..lessons.part1 import cost_per_million_tokens

    value = _number(answer)
    c = COST_CASE
    expected = cost_per_million_tokens(**c)
    energy_only = cost_per_million_tokens(c["tokens_per_s"], c["watts"], c["price_per_kwh"], 0.0)
    rent_only = cost_per_million_tokens(c["tokens_per_s"], 0.0, 0.0, c["hardware_per_hour"])
    if _close(value, expected):
        return True, (f"{expected:.3f} per million tokens: {rent_only:.3f} rent + {energy_only:.4f} electricity. "
                      "Throughput is what makes it cheap.")
    if _close(value, energy_only):
        return False, "That is the electricity only; add the hardware rent for the same hours."
    if _close(value, rent_only):
        return False, "That is the rent only; add the electricity (0.7 kW x 0.15 per kWh) for the same hours."
    hours = 1e6 / c["tokens_per_s"] / 3600
    per_hour_in_watts = c["watts"] * c["price_per_kwh"] + c["hardware_per_hour"]  # 700 taken as kW
    if any(_close(value, v) for v in (hours * per_hour_in_watts, hours * c["watts"] * c["price_per_kwh"])):
        return False, ("Check the power's unit: the price is per kWh, so the 700 W must be in kilowatts "
                       "(divide watts by 1000) before multiplying by the price.")
    if any(_close(value, v) for v in (expected * 3600, energy_only * 3600, rent_only * 3600)):
        return False, ("Check the time's unit: 1e6 / tokens per second gives seconds, and the prices are per "
                       "hour (divide by 3600).")
    if any(_close(value, v) for v in (hours * 3600 * per_hour_in_watts, expected / 3600)):
        return False, "Check both units: hours (seconds / 3600) and kilowatts (watts / 1000)."
    return False, "Hint: first the hours a million tokens take, then the cost of one hour (energy + rent)."


PASSES_CASE = {"prompts": 3, "new_tokens": 50}


@exercise(
    "1.4",
    question=("Three users each get an answer of exactly 50 new tokens, served one after another with a KV cache "
              "(as il.generate does). How many forward passes does the model run in total? Give an int."),
    solution='''
One forward pass per generated token: the first pass reads the whole prompt at once and yields the
first token (prefill), each later pass feeds the last token and yields the next (decode).

    answer = 3 * 50     # 150 forward passes, not 3

The hook in the notebook counts exactly this: forward calls == len(res.tokens).
''')
def _verify_forward_passes(answer):
    value = _number(answer)
    expected = PASSES_CASE["prompts"] * PASSES_CASE["new_tokens"]
    if value == expected:
        return True, f"{expected} passes: one per generated token, whatever the prompt length."
    if value == PASSES_CASE["prompts"]:
        return False, "That is the blog's simplification, one pass per answer. Count what the hook counted."
    if value == PASSES_CASE["new_tokens"]:
        return False, "That is one user's answer; there are three."
    if value in (expected + PASSES_CASE["prompts"], expected - PASSES_CASE["prompts"]):
        return False, "Close: the prompt's pass (prefill) already yields the first new token."
    return False, "Hint: how many forward calls did the hook count for one il.generate call?"


@exercise(
    "1.5",
    question=("Predict, before timing them: one training step on a batch takes how many times the time of one "
              "inference pass on the same batch? Give a number; it is checked against your own measurement."),
    solution='''
A training step runs the same forward pass as inference, then a backward pass that does about twice
the forward's arithmetic (each matrix multiply needs two gradients: for its input and for its weight),
then the optimizer's update of every weight. So about 1 + 2 = 3 forward passes' worth, a little more
for the update and for saving activations:

    answer_15 = 3.0

On a model this small, the fixed cost of each torch operation blurs the arithmetic, so the measured
ratio can land a little above or below; the check accepts any reasoning-based guess from 2 up that
is within a factor of 2.5 of what your machine measured.
''', measured="step_ratio")
def _verify_step_ratio(answer, measured):
    value, measured = _number(answer), _number(measured)
    if measured <= 0:
        raise ValueError("the measured ratio must be > 0")
    if value <= 1:
        return False, ("A training step contains a whole forward pass, the same one inference runs, and then more "
                       "work: it cannot take less time than one pass.")
    if value < measured / 2.5:
        return False, ("Too low for what your machine measured: count the backward pass (each matrix multiply "
                       "needs two gradients) and the optimizer's update, not only the forward pass.")
    if value > measured * 2.5:
        return False, ("Too high for what your machine measured: the backward pass is a few forward passes' "
                       "worth of arithmetic, not tens.")
    if value < 2:
        return False, ("Your guess is near the measurement, but the reasoning behind it is missing: "
                       "what does the backward pass cost against the forward pass?")
    return True, "Forward + backward (about twice the forward) + an update: a few times one inference pass."

