"""ActivationSimilarity against numpy on the concatenated data, and its argument checks."""

import numpy as np
import pytest
import torch

from lightning_semvec.errors import SemvecValueError
from lightning_semvec.metrics import ActivationSimilarity


def activations(samples=300, neurons=25, seed=0):
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(samples, 3, generator=g)
    acts = torch.relu(latent @ torch.randn(3, neurons, generator=g) + 0.1)
    acts[:, 4] = 3.0  # constant: dead for Pearson, alive for cosine
    acts[:, 7] = 0.0  # zero: dead for both
    return acts


def streamed(metric, acts, batch=37):
    for chunk in acts.split(batch):
        metric.update(chunk)
    return metric


def numpy_similarity(acts, kind):
    """The similarity of the neurons that vary (Pearson) or are non-zero (cosine), by hand."""
    a = acts.double().numpy()
    if kind == "pearson":
        a = a - a.mean(axis=0)
    norms = np.linalg.norm(a, axis=0)
    alive = norms > 1e-6 * np.abs(acts.double().numpy()).max(axis=0) * np.sqrt(len(a)) + 1e-12
    unit = np.where(alive, a / np.where(alive, norms, 1.0), 0.0)
    similarity = unit.T @ unit
    np.fill_diagonal(similarity, alive.astype(float))
    return similarity, alive


@pytest.mark.parametrize("kind", ["pearson", "cosine"])
def test_streamed_similarity_equals_numpy_on_the_concatenated_data(kind):
    acts = activations()
    similarity, alive = streamed(ActivationSimilarity(25, similarity=kind), acts).compute()
    expected, expected_alive = numpy_similarity(acts, kind)
    assert similarity.dtype == torch.float32 and similarity.shape == (25, 25)
    assert alive.tolist() == expected_alive.tolist()
    assert alive[4].item() == (kind == "cosine") and not alive[7]
    np.testing.assert_allclose(similarity.numpy(), expected, atol=1e-5, rtol=0)


def test_wide_layer_tracks_the_seeded_subset_in_sorted_order():
    acts = activations(neurons=200, seed=1)
    metric = streamed(ActivationSimilarity(200, max_neurons=30, seed=3), acts)
    indices = metric.neuron_indices
    assert metric.num_tracked == 30 and torch.equal(indices, indices.unique())
    assert torch.equal(indices, ActivationSimilarity(200, max_neurons=30, seed=3).neuron_indices)
    similarity, alive = metric.compute()
    expected, expected_alive = numpy_similarity(acts[:, indices], "pearson")
    assert alive.tolist() == expected_alive.tolist()
    np.testing.assert_allclose(similarity.numpy(), expected, atol=1e-5, rtol=0)


def test_compute_is_cached_until_the_next_update_and_reset_clears():
    acts = activations()
    metric = streamed(ActivationSimilarity(25), acts[:150])
    first, _ = metric.compute()
    metric.update(acts[150:])
    both, _ = metric.compute()
    expected, _ = numpy_similarity(acts, "pearson")
    np.testing.assert_allclose(both.numpy(), expected, atol=1e-5, rtol=0)
    assert not torch.allclose(first, both)
    metric.reset()
    assert metric.count.item() == 0 and metric.outer.abs().sum() == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_neurons": 1}, "num_neurons must be an integer >= 2"),
        ({"num_neurons": True}, "num_neurons must be an integer"),
        ({"num_neurons": 10, "max_neurons": 1}, "max_neurons must be an integer >= 2"),
        ({"num_neurons": 10, "similarity": "euclid"}, "Unknown similarity kind 'euclid'"),
        ({"num_neurons": 10, "seed": 1.5}, "seed must be an integer"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ActivationSimilarity(**kwargs)


def test_bad_activations_are_named():
    metric = ActivationSimilarity(10)
    with pytest.raises(ValueError, match="have 11 neurons, the metric was built for 10"):
        metric.update(torch.randn(4, 11))
    with pytest.raises(ValueError, match=r"\(samples, neurons\) tensor"):
        metric.update(torch.randn(4, 10, 2))


def test_bad_argument_errors_are_the_package_errors():
    with pytest.raises(SemvecValueError):
        ActivationSimilarity(num_neurons=0)
