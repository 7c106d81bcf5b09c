"""semantic_fidelity and fidelity_upper_bound against direct computations (scipy, numpy)."""

import numpy as np
import pytest
import scipy.stats
import torch

from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional import (
    activation_similarity,
    fidelity_upper_bound,
    semantic_fidelity,
    semantic_similarity,
)


def data(neurons=30, dead=(3, 11), seed=0):
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(200, 4, generator=g) @ torch.randn(4, neurons, generator=g)
    acts[:, list(dead)] = 1.0
    similarity = activation_similarity(acts).double()
    alive = torch.ones(neurons, dtype=torch.bool)
    alive[list(dead)] = False
    vectors = torch.randn(neurons, 5, generator=g)
    return similarity, alive, vectors


def upper(matrix):
    rows, cols = np.triu_indices(matrix.shape[0], k=1)
    return matrix[rows, cols]


def direct_neighbour_agreement(s_act, s_sem, k):
    """Mean over neurons of the shared fraction of their k most similar other neurons."""
    shared = []
    for i in range(len(s_act)):
        others = [j for j in range(len(s_act)) if j != i]
        knn_act = set(sorted(others, key=lambda j: -s_act[i, j])[:k])
        knn_sem = set(sorted(others, key=lambda j: -s_sem[i, j])[:k])
        shared.append(len(knn_act & knn_sem) / k)
    return float(np.mean(shared))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scipy_and_a_direct_neighbour_count_over_the_alive_neurons(seed):
    similarity, alive, vectors = data(seed=seed)
    scores = semantic_fidelity(similarity, alive, vectors, k=4)
    keep = alive.numpy()
    s_act = similarity.numpy()[keep][:, keep]
    unit = vectors.double().numpy()[keep]
    unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
    s_sem = unit @ unit.T
    expected = scipy.stats.spearmanr(upper(s_act), upper(s_sem)).statistic
    assert scores["spearman"].item() == pytest.approx(expected, abs=1e-6)
    assert scores["neighbour_agreement"].item() == pytest.approx(
        direct_neighbour_agreement(s_act, s_sem, 4), abs=1e-9
    )
    assert set(scores) == {"spearman", "neighbour_agreement"}
    assert all(value.dtype == torch.float64 for value in scores.values())


def test_vectors_that_order_the_pairs_as_the_activations_score_one():
    g = torch.Generator().manual_seed(5)
    vectors = torch.randn(16, 3, generator=g)
    s_act = semantic_similarity(vectors) ** 3  # monotone: same ranks, same neighbours
    scores = semantic_fidelity(s_act, torch.ones(16, dtype=torch.bool), vectors, k=3)
    assert scores["spearman"].item() == pytest.approx(1.0, abs=1e-6)
    assert scores["neighbour_agreement"].item() == 1.0


def test_too_few_alive_neurons_give_nan_with_a_warning():
    similarity, alive, vectors = data(neurons=6, dead=(0, 1))
    with pytest.warns(UserWarning, match="neighbour agreement needs 5"):
        scores = semantic_fidelity(similarity, alive, vectors, k=4)
    assert not torch.isnan(scores["spearman"]) and torch.isnan(scores["neighbour_agreement"])
    alive[2:4] = False
    with pytest.warns(UserWarning, match="only 2 of 6 tracked neurons are alive"):
        scores = semantic_fidelity(similarity, alive, vectors, k=1)
    assert torch.isnan(scores["spearman"]) and torch.isnan(scores["neighbour_agreement"])
    with pytest.warns(UserWarning, match="the upper bound needs 3"):
        assert torch.isnan(fidelity_upper_bound(similarity, alive, 1))


def test_upper_bound_is_the_fidelity_of_the_best_rank_d_vectors():
    similarity, alive, _ = data(neurons=25, seed=4)
    keep = alive.numpy()
    s_act = similarity.numpy()[keep][:, keep]
    values, vectors = np.linalg.eigh(s_act)
    best = vectors[:, -2:] * np.sqrt(np.clip(values[-2:], 0, None))
    unit = best / np.linalg.norm(best, axis=1, keepdims=True)
    expected = scipy.stats.spearmanr(upper(s_act), upper(unit @ unit.T)).statistic
    assert fidelity_upper_bound(similarity, alive, 2).item() == pytest.approx(expected, abs=1e-6)
    assert fidelity_upper_bound(similarity, alive, 4).item() > 0.99  # the data has rank 4


def test_bad_inputs_are_named():
    similarity, alive, vectors = data()
    with pytest.raises(SemvecValueError, match=r"activation_similarity must be a square \(n, n\)"):
        semantic_fidelity(similarity[:, :5], alive, vectors)
    with pytest.raises(SemvecValueError, match=r"alive must be a \(30,\) bool tensor"):
        semantic_fidelity(similarity, alive.float(), vectors)
    with pytest.raises(SemvecValueError, match=r"vectors must be \(30, d\)"):
        semantic_fidelity(similarity, alive, vectors[:20])
    with pytest.raises(SemvecValueError, match="k must be an integer >= 1"):
        semantic_fidelity(similarity, alive, vectors, k=0)
    with pytest.raises(SemvecValueError, match="dim must be an integer with 1 <= dim <= 28"):
        fidelity_upper_bound(similarity, alive, 29)
    with pytest.raises(SemvecValueError, match="dim must be an integer >= 1"):
        fidelity_upper_bound(similarity, alive, True)
