import math

import pytest
import torch

from inferlab.core.sampling import check_sampling_args, next_token_probs, sample_next, top_k_filter, top_p_filter

# A known distribution: probabilities 0.4, 0.3, 0.15, 0.1, 0.05 in a shuffled order.
PROBS = torch.tensor([0.1, 0.4, 0.05, 0.3, 0.15])
LOGITS = PROBS.log()


def kept(logits):
    return set(torch.nonzero(torch.isfinite(logits)).flatten().tolist())


@pytest.mark.parametrize("k, expected", [(1, {1}), (2, {1, 3}), (3, {1, 3, 4}), (5, {0, 1, 2, 3, 4}), (9, {0, 1, 2, 3, 4})])
def test_top_k_keeps_exactly_the_k_most_likely(k, expected):
    assert kept(top_k_filter(LOGITS, k)) == expected


@pytest.mark.parametrize("p, expected", [
    (0.3, {1}),                 # 0.4 alone already reaches 0.3
    (0.4, {1}),                 # exactly reached by the first token
    (0.5, {1, 3}),              # 0.4 < 0.5 -> add 0.3
    (0.7, {1, 3}),              # 0.4 + 0.3 = 0.7 reaches 0.7
    (0.8, {1, 3, 4}),
    (0.9, {1, 3, 4, 0}),
    (1.0, {0, 1, 2, 3, 4}),
])
def test_top_p_keeps_the_smallest_set_reaching_p(p, expected):
    assert kept(top_p_filter(LOGITS, p)) == expected


def test_probs_renormalise_over_kept_tokens():
    probs = next_token_probs(LOGITS, temperature=1.0, top_k=2)
    assert math.isclose(probs[1].item(), 0.4 / 0.7, rel_tol=1e-5) and probs[[0, 2, 4]].sum() == 0


def test_temperature_sharpens_and_flattens():
    cold, hot = next_token_probs(LOGITS, 0.5), next_token_probs(LOGITS, 2.0)
    assert cold.max() > 0.4 > hot.max()
    greedy = next_token_probs(LOGITS, 0.0)
    assert greedy[1] == 1 and greedy.sum() == 1


def test_seeded_sampling_is_reproducible_and_seeds_differ():
    logits = torch.randn(1000)
    draws = lambda seed: [int(sample_next(logits, 1.0, generator=torch.Generator().manual_seed(seed)))
                          for _ in range(1)] + sample_next(logits.expand(50, -1), 1.0,
                                                           generator=torch.Generator().manual_seed(seed)).tolist()
    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_sampling_frequencies_follow_the_distribution():
    g = torch.Generator().manual_seed(0)
    draws = sample_next(LOGITS.expand(20000, -1), 1.0, generator=g)
    freq = torch.bincount(draws, minlength=5).float() / 20000
    assert torch.allclose(freq, PROBS, atol=0.015)


def test_top_p_one_keeps_every_token_like_none():
    """Off is None for both filters; top_p=1.0 keeps everything too (the notebook's sliders rely on it)."""
    assert torch.equal(next_token_probs(LOGITS, 0.8, top_p=1.0), next_token_probs(LOGITS, 0.8))
    assert torch.equal(next_token_probs(LOGITS, 0.8, top_k=len(PROBS)), next_token_probs(LOGITS, 0.8))


def test_top_k_zero_is_refused_and_the_message_names_the_way_to_turn_it_off():
    with pytest.raises(ValueError, match="None to keep every token"):
        check_sampling_args(top_k=0)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(temperature=-0.1), ValueError, "temperature"),
    (dict(temperature="hot"), TypeError, "temperature"),
    (dict(top_k=0), ValueError, "top_k must be >= 1"),
    (dict(top_k=2.5), TypeError, "top_k"),
    (dict(top_p=0.0), ValueError, r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), ValueError, r"top_p must be in \(0, 1\]"),
])
def test_bad_sampling_controls(kwargs, error, words):
    with pytest.raises(error, match=words):
        check_sampling_args(**kwargs)


def test_a_temperature_below_greedy_below_is_greedy_not_an_overflow():
    """Regression: logits / 1e-40 overflowed to inf and the draw raised; vLLM reads such temperatures as greedy."""
    from inferlab.core.sampling import GREEDY_BELOW, next_token_probs, sample_next
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.5, -1.0, 0.2]])
    for t in (1e-40, GREEDY_BELOW / 2):
        assert sample_next(logits, t).tolist() == [1, 0]
        assert next_token_probs(logits, t).tolist() == [[0, 1, 0], [1, 0, 0]]
    assert sample_next(logits, 1.0, generator=torch.Generator().manual_seed(0)).shape == (2,)
