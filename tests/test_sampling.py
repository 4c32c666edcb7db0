from __future__ import annotations

import numpy as np

from assistant.engine import Sampling
from assistant.engine.sampling import probabilities, sample_token


def test_greedy_picks_the_argmax() -> None:
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    assert sample_token(logits, Sampling(), np.random.default_rng(0)) == 1


def test_temperature_one_is_the_softmax() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    p = probabilities(logits, Sampling(temperature=1.0, top_k=0, top_p=1.0))
    assert np.allclose(p, [0.5, 0.3, 0.2])


def test_top_k_and_top_p_truncate_and_renormalise() -> None:
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.1]))
    p = probabilities(logits, Sampling(temperature=1.0, top_k=2, top_p=1.0))
    assert np.allclose(p, [0.4 / 0.7, 0.3 / 0.7, 0, 0])
    # top_p 0.75: the smallest prefix reaching 0.75 is {0.4, 0.3, 0.2}
    p = probabilities(logits, Sampling(temperature=1.0, top_k=0, top_p=0.75))
    assert np.allclose(p, [0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9, 0])
    p = probabilities(logits, Sampling(temperature=1.0, top_k=0, top_p=0.1))
    assert np.allclose(p, [1, 0, 0, 0])


def test_low_temperature_sharpens() -> None:
    logits = np.array([1.0, 0.0])
    hot = probabilities(logits, Sampling(temperature=2.0, top_k=0, top_p=1.0))
    cold = probabilities(logits, Sampling(temperature=0.25, top_k=0, top_p=1.0))
    assert cold[0] > hot[0] > 0.5


def test_sampling_frequencies_follow_the_distribution() -> None:
    target = np.array([0.6, 0.25, 0.1, 0.05])
    rng = np.random.default_rng(1)
    s = Sampling(temperature=1.0, top_k=0, top_p=1.0)
    draws = np.bincount([sample_token(np.log(target), s, rng) for _ in range(20000)], minlength=4) / 20000
    assert np.abs(draws - target).max() < 0.015
