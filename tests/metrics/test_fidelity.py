
import pytest
import torch
from two_processes import run_on_two_ranks

from lightning_semvec.functional.neuron_statistics import (
    best_rank_d_vectors,
    spearman_upper_triangle,
)
from lightning_semvec.functional.similarity import (
    activation_similarity,
    semantic_similarity,
)
from lightning_semvec.metrics import (
    ActivationSimilarity,
    NeuronActivationStatistics,
    SemanticFidelity,
)


def low_rank_activations(samples=600, neurons=100, rank=4, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(samples, rank, generator=g)
    mixing = torch.randn(rank, neurons, generator=g)
    return torch.relu(latent @ mixing + noise * torch.randn(samples, neurons, generator=g))


def streamed(metric, acts, batch=64):
    for chunk in acts.split(batch):
        metric.update(chunk)
    return metric


def test_random_vectors_give_about_zero():
    acts = low_rank_activations()
    metric = streamed(SemanticFidelity(num_neurons=100), acts)
    g = torch.Generator().manual_seed(1)
    metric.set_vectors(torch.randn(100, 8, generator=g))
    result = metric.compute()
    assert abs(result["spearman"].item()) < 0.1
    # chance level of neighbour agreement is k / (N - 1) = 0.05
    assert result["neighbour_agreement"].item() < 0.2


def test_best_rank_d_vectors_reach_the_upper_bound_on_low_rank_data():
    acts = low_rank_activations(rank=4)
    metric = streamed(SemanticFidelity(num_neurons=100), acts)
    s_act, alive = metric.compute_similarity()
    assert alive.all()
    bound = metric.upper_bound(4)
    metric.set_vectors(best_rank_d_vectors(s_act, 4))
    result = metric.compute()
    assert bound.item() > 0.9
    assert result["spearman"].item() == pytest.approx(bound.item(), abs=1e-4)
    assert result["neighbour_agreement"].item() > 0.6
    # fewer dimensions than the data's rank fit worse
    assert metric.upper_bound(1).item() < bound.item()


def test_streaming_equals_one_shot():
    acts = low_rank_activations(samples=500, neurons=37, seed=3)
    acts[:, 5] = 2.5  # a dead (constant) neuron
    vectors = torch.randn(37, 6, generator=torch.Generator().manual_seed(4))
    one_shot = SemanticFidelity(num_neurons=37, vectors=vectors)
    one_shot.update(acts)
    many = streamed(SemanticFidelity(num_neurons=37, vectors=vectors), acts, batch=23)
    s_many, alive = many.compute_similarity()
    s_one, _ = one_shot.compute_similarity()
    reference = activation_similarity(acts)
    torch.testing.assert_close(s_many, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(s_many, s_one, atol=1e-5, rtol=0)
    assert not alive[5] and alive.sum() == 36
    assert s_many[5].abs().sum() == 0 and s_many[:, 5].abs().sum() == 0
    r_many, r_one = many.compute(), one_shot.compute()
    for key in r_one:
        assert r_many[key].item() == pytest.approx(r_one[key].item(), abs=1e-5)
    # the same as computing by hand on the alive neurons of the concatenated data
    keep = alive.nonzero().squeeze(1)
    expected = spearman_upper_triangle(
        reference[keep][:, keep], semantic_similarity(vectors[keep])
    )
    assert r_many["spearman"].item() == pytest.approx(expected.item(), abs=1e-5)


def test_cosine_and_low_precision_inputs():
    acts = low_rank_activations(samples=200, neurons=20, seed=5)
    metric = streamed(SemanticFidelity(num_neurons=20, similarity="cosine"), acts, batch=50)
    s, _ = metric.compute_similarity()
    torch.testing.assert_close(s, activation_similarity(acts, "cosine"), atol=1e-5, rtol=0)
    half = streamed(SemanticFidelity(num_neurons=20), acts.to(torch.bfloat16), batch=50)
    s_half, _ = half.compute_similarity()
    expected = activation_similarity(acts.to(torch.bfloat16).float())
    torch.testing.assert_close(s_half, expected, atol=1e-5, rtol=0)


def test_wide_layer_tracks_a_fixed_bounded_subset():
    num_neurons, max_neurons = 3000, 48
    metric = SemanticFidelity(num_neurons=num_neurons, max_neurons=max_neurons, seed=7)
    again = SemanticFidelity(num_neurons=num_neurons, max_neurons=max_neurons, seed=7)
    other = SemanticFidelity(num_neurons=num_neurons, max_neurons=max_neurons, seed=8)
    idx = metric.neuron_indices
    assert idx.shape == (max_neurons,) and torch.equal(idx, again.neuron_indices)
    assert not torch.equal(idx, other.neuron_indices)
    assert torch.equal(idx, idx.unique())  # sorted, no repeats
    assert int(idx.max()) < num_neurons
    assert metric.outer.shape == (max_neurons, max_neurons)
    assert sum(t.numel() for t in (metric.sums, metric.outer, metric.max_abs)) <= (
        max_neurons**2 + 2 * max_neurons
    )
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(64, 4, generator=g) @ torch.randn(4, num_neurons, generator=g)
    streamed(metric, acts, batch=16)
    s, _alive = metric.compute_similarity()
    torch.testing.assert_close(s, activation_similarity(acts[:, idx]), atol=1e-5, rtol=0)
    metric.set_vectors(torch.randn(num_neurons, 4, generator=g))  # vectors for all N neurons
    assert set(metric.compute()) == {"spearman", "neighbour_agreement"}


def test_set_vectors_clears_the_cached_result():
    acts = low_rank_activations(samples=200, neurons=30)
    metric = streamed(SemanticFidelity(num_neurons=30), acts)
    s_act, _ = metric.compute_similarity()
    metric.set_vectors(best_rank_d_vectors(s_act, 4))
    good = metric.compute()["spearman"].item()
    metric.set_vectors(torch.randn(30, 4, generator=torch.Generator().manual_seed(0)))
    assert metric.compute()["spearman"].item() < good - 0.3
    metric.reset()
    assert metric.count.item() == 0 and metric.vectors is not None


def test_too_few_alive_neurons_give_nan_with_a_warning():
    acts = torch.ones(10, 6)
    acts[:, 0] = torch.arange(10.0)
    acts[:, 1] = torch.arange(10.0) ** 2
    metric = SemanticFidelity(num_neurons=6, k=2, vectors=torch.randn(6, 2))
    metric.update(acts)
    with pytest.warns(UserWarning, match="alive"):
        result = metric.compute()
    assert torch.isnan(result["spearman"]) and torch.isnan(result["neighbour_agreement"])


def test_bad_input_raises():
    with pytest.raises(ValueError, match="similarity"):
        SemanticFidelity(num_neurons=10, similarity="euclid")
    with pytest.raises(ValueError, match="k must be smaller"):
        SemanticFidelity(num_neurons=10, k=10)
    with pytest.raises(ValueError, match="k must be smaller"):
        SemanticFidelity(num_neurons=5000, max_neurons=8, k=8)
    with pytest.raises(ValueError, match="num_neurons"):
        SemanticFidelity(num_neurons=2)
    with pytest.raises(ValueError, match="compute_with_cache"):
        SemanticFidelity(num_neurons=10, compute_with_cache=True)
    metric = SemanticFidelity(num_neurons=10)
    with pytest.raises(ValueError, match="neurons"):
        metric.update(torch.randn(4, 11))
    with pytest.raises(ValueError, match="samples, neurons"):
        metric.update(torch.randn(4, 10, 2))
    with pytest.raises(ValueError, match=r"\(10, d\)"):
        metric.set_vectors(torch.randn(9, 3))
    metric.update(torch.randn(20, 10))
    with pytest.raises(RuntimeError, match="set_vectors"):
        metric.compute()
    with pytest.raises(ValueError, match="dim"):
        metric.upper_bound(11)


# --- two processes, gloo on CPU ----------------------------------------------------------


def _share(rank, world_size, acts, vectors, labels):
    """One process's share: half the data, then the synced results."""
    share = acts.chunk(world_size)[rank]
    metric = SemanticFidelity(num_neurons=acts.shape[1], max_neurons=24, k=3)
    metric.set_vectors(vectors)
    streamed(metric, share, batch=17)
    # each call gathers for itself and restores the local states: no sample counted twice
    similarity, alive = metric.compute_similarity()
    result = metric.compute()
    similarity_again, _ = metric.compute_similarity()
    bound = metric.upper_bound(3)
    plain = streamed(ActivationSimilarity(num_neurons=acts.shape[1], max_neurons=24), share)
    stats = NeuronActivationStatistics(num_neurons=acts.shape[1], num_classes=4)
    stats.update(share, labels.chunk(world_size)[rank])
    got = {
        "result": result,
        "similarity": similarity,
        "similarity_again": similarity_again,
        "alive": alive,
        "bound": bound,
        "local_count": metric.count.clone(),
        "plain": plain.compute(),
        "statistics": stats.compute(),
    }
    return got


@pytest.mark.timeout(120)
def test_two_processes_equal_one_process(tmp_path):
    """Two processes (gloo, CPU), each updating with half the data, equal one process.

    The test process is rank 0 and one spawned process is rank 1: a spawned process spends
    seconds importing torchmetrics and lightning, so only one is started. It also covers
    ActivationSimilarity and NeuronActivationStatistics, for the same reason. Both ranks'
    results are checked: each must see the whole set.
    """
    acts = low_rank_activations(samples=300, neurons=40, rank=3, seed=11)
    vectors = torch.randn(40, 3, generator=torch.Generator().manual_seed(12))
    labels = torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(13))
    rank0, rank1 = run_on_two_ranks(_share, (acts, vectors, labels), tmp_path / "rank1.pt")

    single = SemanticFidelity(num_neurons=40, max_neurons=24, k=3, vectors=vectors)
    streamed(single, acts)
    expected = single.compute()
    similarity, alive = single.compute_similarity()
    bound = single.upper_bound(3)
    stats = NeuronActivationStatistics(num_neurons=40, num_classes=4)
    stats.update(acts, labels)
    expected_statistics = stats.compute()
    for got in (rank0, rank1):
        torch.testing.assert_close(got["similarity"], similarity, atol=1e-6, rtol=0)
        torch.testing.assert_close(got["similarity_again"], similarity, atol=1e-6, rtol=0)
        assert torch.equal(got["alive"], alive)
        for key in expected:
            assert got["result"][key].item() == pytest.approx(expected[key].item(), abs=1e-6)
        assert got["bound"].item() == pytest.approx(bound.item(), abs=1e-6)
        assert got["local_count"].item() == 150  # local state restored after each gather
        torch.testing.assert_close(got["plain"][0], similarity, atol=1e-6, rtol=0)
        assert torch.equal(got["plain"][1], alive)
        for key, value in expected_statistics.items():
            torch.testing.assert_close(got["statistics"][key], value, atol=1e-6, rtol=0)
