"""functional.agreement: semantic similarity held against confusion and class profiles,
checked against NumPy/SciPy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.agreement import (
    class_profile_similarity,
    similarity_agreement,
    symmetric_confusion,
)


def _symmetric(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(n, n, generator=g, dtype=torch.float64)
    return (m + m.T) / 2


def test_symmetric_confusion_is_the_mean_of_both_directions_rates() -> None:
    counts = torch.tensor([[6, 3, 1], [0, 10, 0], [2, 2, 16]])
    expected = counts.numpy().astype(float)
    expected = expected / expected.sum(axis=1, keepdims=True)
    expected = (expected + expected.T) / 2
    np.fill_diagonal(expected, 0.0)
    out = symmetric_confusion(counts)
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)


def test_symmetric_confusion_of_a_class_never_seen_is_its_column_of_others_mistakes() -> None:
    counts = torch.tensor([[0, 0], [3, 1]])  # class 0 has no inputs
    out = symmetric_confusion(counts)
    assert out[0, 1].item() == pytest.approx(0.75 / 2)


@pytest.mark.parametrize("bad", [torch.ones(2, 3), torch.tensor([[1, -1], [0, 2]]), torch.ones(4)])
def test_symmetric_confusion_refuses_what_is_not_a_square_of_counts(bad: torch.Tensor) -> None:
    with pytest.raises(SemvecValueError, match="confusion must"):
        symmetric_confusion(bad)


def test_class_profile_similarity_is_numpys_correlation_and_drops_unseen_classes() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.rand(12, 5, generator=g)
    with_unseen = torch.cat([means, torch.full((1, 5), float("nan"))])
    out = class_profile_similarity(with_unseen)
    np.testing.assert_allclose(out.numpy(), np.corrcoef(means.double().numpy().T), atol=1e-10)


def test_a_flat_profile_has_no_similarity() -> None:
    means = torch.tensor([[1.0, 0.0], [2.0, 0.0], [4.0, 0.0]])  # neuron 1 dead
    out = class_profile_similarity(means)
    assert torch.isnan(out[1]).all() and torch.isnan(out[:, 1]).all()
    assert out[0, 0].item() == pytest.approx(1.0)


def test_class_profile_similarity_needs_two_classes() -> None:
    with pytest.raises(SemvecValueError, match="at least 2 classes"):
        class_profile_similarity(torch.ones(1, 4))


def test_spearman_is_scipys_over_the_upper_triangle_with_ties() -> None:
    sim = _symmetric(9, 1)
    ref = torch.round(_symmetric(9, 2) * 4) / 4  # many ties, as in confusion counts
    result = similarity_agreement(sim, ref, top_k=5)
    rows, cols = np.triu_indices(9, k=1)
    expected = spearmanr(sim.numpy()[rows, cols], ref.numpy()[rows, cols]).statistic
    assert result.spearman == pytest.approx(expected, abs=1e-5)
    assert result.pairs == 36 and result.chance_overlap == pytest.approx(5 / 36)


def test_top_overlap_counts_the_shared_top_pairs() -> None:
    n = 6
    sim = torch.zeros(n, n, dtype=torch.float64)
    ref = torch.zeros(n, n, dtype=torch.float64)
    for (i, j), s, r in [((0, 1), 0.9, 0.5), ((2, 3), 0.8, 0.0), ((4, 5), 0.7, 0.4), ((1, 2), 0.1, 0.3)]:
        sim[i, j] = sim[j, i] = s
        ref[i, j] = ref[j, i] = r
    result = similarity_agreement(sim, ref, top_k=3)
    # the similarity's top 3: (0,1), (2,3), (4,5); the reference's: (0,1), (4,5), (1,2)
    assert result.top_pairs.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert result.reference_pairs.tolist() == [[0, 1], [4, 5], [1, 2]]
    assert result.top_overlap == pytest.approx(2 / 3)


def test_pairs_with_nan_and_neurons_not_kept_are_left_out() -> None:
    sim = _symmetric(6, 3)
    ref = _symmetric(6, 4)
    ref[5, :] = ref[:, 5] = float("nan")  # a dead neuron's profile
    keep = torch.tensor([True, True, True, True, False, True])
    result = similarity_agreement(sim, ref, top_k=2, keep=keep)
    assert result.pairs == 6  # neurons 0..3: 4 * 3 / 2
    kept = np.array([0, 1, 2, 3])
    rows, cols = np.triu_indices(4, k=1)
    expected = spearmanr(sim.numpy()[np.ix_(kept, kept)][rows, cols],
                         ref.numpy()[np.ix_(kept, kept)][rows, cols]).statistic
    assert result.spearman == pytest.approx(expected, abs=1e-5)
    assert not ({4, 5} & set(result.top_pairs.flatten().tolist()))


def test_a_similarity_agrees_perfectly_with_itself_and_not_with_its_opposite() -> None:
    sim = _symmetric(8, 5)
    assert similarity_agreement(sim, sim, top_k=4).spearman == pytest.approx(1.0)
    assert similarity_agreement(sim, sim, top_k=4).top_overlap == 1.0
    opposite = similarity_agreement(sim, -sim, top_k=4)
    assert opposite.spearman == pytest.approx(-1.0) and opposite.top_overlap == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reference": torch.zeros(3, 3)}, "same shape"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 100}, "at most the number of valid pairs"),
        ({"keep": torch.ones(4)}, "keep must be a bool"),
    ],
)
def test_bad_arguments_say_what_was_wrong(kwargs: dict, match: str) -> None:
    arguments = {"similarity": _symmetric(4, 0), "reference": _symmetric(4, 1), "top_k": 2, **kwargs}
    with pytest.raises(SemvecValueError, match=match):
        similarity_agreement(**arguments)
