
import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_semvec.functional.neuron_statistics import (
    alive_from_moments,
    average_ranks,
    best_rank_d_vectors,
    class_selectivity,
    neighbour_agreement,
    similarity_from_moments,
    spearman_upper_triangle,
)
from lightning_semvec.functional.similarity import (
    activation_similarity,
    standardize_activations,
)
from lightning_semvec.metrics import NeuronActivationStatistics


def symmetric(n, seed, decimals=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n, generator=g, dtype=torch.float64)
    s = (x + x.T) / 2
    return s.round(decimals=decimals) if decimals is not None else s


def upper(s):
    i, j = np.triu_indices(s.shape[0], k=1)
    return s.numpy()[i, j]


# --- spearman_upper_triangle ---------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(3, 30),
    seed=st.integers(0, 2**31 - 1),
    decimals=st.sampled_from([None, 0, 1]),
)
def test_spearman_matches_scipy(n, seed, decimals):
    a, b = symmetric(n, seed, decimals), symmetric(n, seed + 1, decimals)
    expected = scipy.stats.spearmanr(upper(a), upper(b)).statistic
    got = spearman_upper_triangle(a, b).item()
    if np.isnan(expected):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(expected, abs=1e-10)


def test_spearman_with_a_huge_tie_group_matches_scipy():
    # 320k pairs, half of them tied at 0: torchmetrics' int32 rank sums overflow here.
    a, b = symmetric(800, 0), symmetric(800, 1)
    b = b + a
    a[:400, :] = 0.0
    a[:, :400] = 0.0
    expected = scipy.stats.spearmanr(upper(a), upper(b)).statistic
    assert spearman_upper_triangle(a, b).item() == pytest.approx(expected, abs=1e-9)
    assert average_ranks(torch.zeros(100_000))[0].item() == pytest.approx(50_000.5)


def test_spearman_ignores_the_diagonal_and_is_rank_based():
    a = symmetric(12, 3)
    b = a.clone()
    b.diagonal().copy_(torch.randn(12, dtype=torch.float64))
    assert spearman_upper_triangle(a, b).item() == pytest.approx(1.0)
    assert spearman_upper_triangle(a, torch.exp(3 * a)).item() == pytest.approx(1.0)
    assert spearman_upper_triangle(a, -a).item() == pytest.approx(-1.0)
    assert spearman_upper_triangle(a.float(), a.float()).dtype == torch.float32


def test_spearman_undefined_cases():
    a = symmetric(5, 0)
    assert torch.isnan(spearman_upper_triangle(a, torch.ones(5, 5, dtype=torch.float64)))
    b = a.clone()
    b[0, 1] = float("nan")
    assert torch.isnan(spearman_upper_triangle(a, b))
    with pytest.raises(ValueError, match="at least 3"):
        spearman_upper_triangle(torch.eye(2), torch.eye(2))
    with pytest.raises(ValueError, match="square"):
        spearman_upper_triangle(torch.zeros(3, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="same shape"):
        spearman_upper_triangle(torch.eye(3), torch.eye(4))


# --- neighbour_agreement -------------------------------------------------------------------


def test_neighbour_agreement_hand_computed():
    s_act = torch.tensor(
        [
            [1.0, 0.9, 0.5, 0.0],
            [0.9, 1.0, 0.1, 0.4],
            [0.5, 0.1, 1.0, 0.8],
            [0.0, 0.4, 0.8, 1.0],
        ]
    )
    # nearest (k=1): act 0->1, 1->0, 2->3, 3->2 ; sem 0->2, 1->0, 2->0, 3->2
    s_sem = torch.tensor(
        [
            [1.0, 0.2, 0.7, 0.1],
            [0.2, 1.0, 0.1, 0.0],
            [0.7, 0.1, 1.0, 0.3],
            [0.1, 0.0, 0.3, 1.0],
        ]
    )
    assert neighbour_agreement(s_act, s_sem, k=1).item() == pytest.approx(0.5)
    # k=2: act {1,2},{0,3},{3,0},{2,1}; sem {2,1},{0,2},{0,3},{2,0} -> 2,1,2,1 shared
    assert neighbour_agreement(s_act, s_sem, k=2).item() == pytest.approx(0.75)
    # k = N - 1: every other neuron is a neighbour
    assert neighbour_agreement(s_act, s_sem, k=3).item() == pytest.approx(1.0)


def test_neighbour_agreement_random_is_near_chance():
    a, b = symmetric(300, 0), symmetric(300, 1)
    assert neighbour_agreement(a, b, k=10).item() == pytest.approx(10 / 299, abs=0.02)


def test_neighbour_agreement_bad_k():
    s = torch.eye(4)
    for k in (0, 4, 2.0):
        with pytest.raises(ValueError, match="k must"):
            neighbour_agreement(s, s, k=k)


# --- class_selectivity ---------------------------------------------------------------------


def test_class_selectivity_hand_computed():
    means = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 2.0], [5.0, 0.0, 2.0], [7.0, 0.0, 0.0]])
    si, preferred = class_selectivity(means, eps=0.0)
    # neuron 0: mu_max 7, mu_rest (1+3+5)/3 = 3 -> 4/10
    # neuron 1: all zero -> 0 (eps 0 would divide 0/0, so use the default eps below)
    # neuron 2: mu_max 2, mu_rest (2+2+0)/3 = 4/3 -> (2/3)/(10/3) = 0.2
    assert si[0].item() == pytest.approx(0.4)
    assert si[2].item() == pytest.approx(0.2)
    assert preferred.tolist()[0] == 3 and preferred.tolist()[2] in (0, 1, 2)
    si, _ = class_selectivity(means)
    assert si[1].item() == 0.0
    assert si[0].item() == pytest.approx(0.4, abs=1e-6)


def test_class_selectivity_with_absent_classes():
    means = torch.tensor([[2.0, 1.0], [float("nan"), float("nan")], [1.0, 3.0]])
    present = torch.tensor([True, False, True])
    si, preferred = class_selectivity(means, present=present)
    assert si.tolist() == pytest.approx([1 / 3, 0.5], abs=1e-6)
    assert preferred.tolist() == [0, 2]
    si, _ = class_selectivity(means, present=torch.tensor([True, False, False]))
    assert torch.isnan(si).all()
    with pytest.raises(ValueError, match="present"):
        class_selectivity(means, present=torch.tensor([True, True]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        class_selectivity(torch.ones(1, 5))
    with pytest.raises(ValueError, match="classes, neurons"):
        class_selectivity(torch.ones(5))


def test_class_selectivity_of_signed_activations_is_the_index_of_shifted_ones():
    # A logit: class means 3, -1, -1 over activations as low as -3. On a + 3 the means are
    # 6, 2, 2: SI = (6 - 2) / (6 + 2) = 0.5. Unshifted it would be 4 / 2 = 2, above 1.
    means = torch.tensor([[3.0, 0.5], [-1.0, 2.0], [-1.0, 0.5]])
    minimum = torch.tensor([-3.0, 0.2])  # neuron 1 is non-negative: not shifted
    si, preferred = class_selectivity(means, eps=0.0, minimum=minimum)
    assert si.tolist() == pytest.approx([0.5, 1.5 / 2.5])  # neuron 1: means 0.5, 2, 0.5
    assert preferred.tolist() == [0, 1]
    assert class_selectivity(means, eps=0.0)[0][0].item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"minimum must be \(2,\), one per neuron"):
        class_selectivity(means, minimum=torch.zeros(3))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), offset=st.floats(-5.0, 5.0))
def test_statistics_selectivity_lies_in_0_1_for_signed_activations(seed, offset):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(60) % 3
    acts = torch.randn(60, 5, generator=g) * 2 + offset  # logits or pre-ReLU: any sign
    stats = NeuronActivationStatistics(num_neurons=5, num_classes=3)
    for a, y in zip(acts.split(16), labels.split(16)):
        stats.update(a, y)
    si = stats.compute()["selectivity"]
    assert ((si >= 0) & (si <= 1 + 1e-6)).all(), si
    class_means = torch.stack([acts[labels == c].mean(0) for c in range(3)])
    expected, _ = class_selectivity(class_means, minimum=acts.amin(0))
    torch.testing.assert_close(si, expected, atol=1e-5, rtol=0)


# --- best_rank_d_vectors -------------------------------------------------------------------


def test_best_rank_d_vectors_is_the_eckart_young_fit():
    acts = torch.randn(50, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = activation_similarity(acts).double()
    eigenvalues = torch.linalg.eigvalsh(s).flip(0)
    for d in (1, 3, 20):
        v = best_rank_d_vectors(s, d)
        assert v.shape == (20, d) and v.dtype == s.dtype
        error = (s - v @ v.T).square().sum()
        assert error.item() == pytest.approx(eigenvalues[d:].square().sum().item(), abs=1e-4)
    assert best_rank_d_vectors(s.float(), 2).dtype == torch.float32
    with pytest.raises(ValueError, match="dim"):
        best_rank_d_vectors(s, 21)
    with pytest.raises(ValueError, match="dim"):
        best_rank_d_vectors(s, 0)
    with pytest.raises(ValueError, match="square"):
        best_rank_d_vectors(torch.zeros(3, 2), 1)


# --- moments -------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    samples=st.integers(2, 40),
    neurons=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
    kind=st.sampled_from(["pearson", "cosine"]),
)
def test_moments_agree_with_batch_similarity(samples, neurons, seed, kind):
    g = torch.Generator().manual_seed(seed)
    acts = torch.relu(torch.randn(samples, neurons, generator=g))
    acts[:, 0] = 3.0  # constant: dead for pearson
    a = acts.double()
    s, alive = similarity_from_moments(
        torch.tensor(float(samples)), a.sum(0), a.T @ a, a.abs().amax(0), kind
    )
    _, expected_alive = standardize_activations(acts, kind)
    assert torch.equal(alive, expected_alive)
    torch.testing.assert_close(s.float(), activation_similarity(acts, kind), atol=1e-5, rtol=0)
    moments = (torch.tensor(float(samples)), a.sum(0), (a * a).sum(0), a.abs().amax(0))
    assert torch.equal(alive_from_moments(*moments, kind), alive)


# --- NeuronActivationStatistics ------------------------------------------------------------


def labelled_data(samples=240, neurons=9, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (samples,), generator=g)
    prototypes = torch.rand(classes, neurons, generator=g) * 3
    acts = torch.relu(prototypes[labels] + 0.3 * torch.randn(samples, neurons, generator=g))
    acts[:, 2] = 0.0  # dead
    acts[:, 4] = 1.5  # dead, constant non-zero
    return acts, labels


def test_statistics_hand_computed_and_streaming_equals_one_shot():
    acts, labels = labelled_data()
    one_shot = NeuronActivationStatistics(num_neurons=9, num_classes=4)
    one_shot.update(acts, labels)
    many = NeuronActivationStatistics(num_neurons=9, num_classes=4)
    for a, y in zip(acts.split(37), labels.split(37)):
        many.update(a, y)
    r_one, r_many = one_shot.compute(), many.compute()
    for key in r_one:
        torch.testing.assert_close(r_many[key], r_one[key], atol=1e-5, rtol=0)

    class_means = torch.stack([acts[labels == c].mean(0) for c in range(4)])
    torch.testing.assert_close(r_many["class_means"], class_means, atol=1e-5, rtol=0)
    torch.testing.assert_close(r_many["mean_activation"], acts.mean(0), atol=1e-5, rtol=0)
    si, preferred = class_selectivity(class_means)
    torch.testing.assert_close(r_many["selectivity"], si, atol=1e-5, rtol=0)
    assert torch.equal(r_many["preferred_class"], preferred)
    assert r_many["dead"].tolist() == [i in (2, 4) for i in range(9)]
    assert r_many["class_counts"].tolist() == [float((labels == c).sum()) for c in range(4)]


def test_statistics_with_an_unseen_class():
    acts = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0]])
    stats = NeuronActivationStatistics(num_neurons=2, num_classes=3)
    stats.update(acts, torch.tensor([0, 0, 2]))
    out = stats.compute()
    assert torch.isnan(out["class_means"][1]).all()
    # neuron 0: classes {0: 2, 2: 0} -> SI 1 ; neuron 1: {0: 1, 2: 4} -> 3/5
    assert out["selectivity"].tolist() == pytest.approx([1.0, 0.6], abs=1e-6)
    assert out["preferred_class"].tolist() == [0, 2]


def test_statistics_bad_input():
    with pytest.raises(ValueError, match="num_classes"):
        NeuronActivationStatistics(num_neurons=3, num_classes=1)
    stats = NeuronActivationStatistics(num_neurons=3, num_classes=2)
    with pytest.raises(ValueError, match="built for 3"):
        stats.update(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="one per sample"):
        stats.update(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        stats.update(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        stats.update(torch.zeros(2, 3), torch.tensor([0, 2]))


# The two-process (DDP, gloo) check of NeuronActivationStatistics shares one spawn with
# SemanticFidelity's in tests/test_fidelity.py: spawning workers costs seconds of imports.
