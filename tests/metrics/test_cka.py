"""LinearCKA: the mean of per-minibatch unbiased HSIC, skipped small batches, checks before any
state changes, and two processes (gloo, CPU) equal to one."""

from __future__ import annotations

import math

import pytest
import torch
from two_processes import run_on_two_ranks

from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional import linear_cka, unbiased_hsic
from lightning_semvec.metrics import LinearCKA


def model_layers(samples=192, widths=(5, 8, 3), seed=0):
    """Layers of one made-up model: each a noisy function of the one before."""
    g = torch.Generator().manual_seed(seed)
    layers = [torch.randn(samples, widths[0], generator=g)]
    for width in widths[1:]:
        previous = layers[-1]
        layers.append(torch.relu(previous @ torch.randn(previous.shape[1], width, generator=g))
                      + 0.3 * torch.randn(samples, width, generator=g))
    return layers


def minibatches(layers, size):
    return [[layer[i:i + size] for layer in layers] for i in range(0, layers[0].shape[0], size)]


def expected_cka(batches_a, batches_b):
    """mean HSIC_1(a, b) / sqrt(mean HSIC_1(a, a) mean HSIC_1(b, b)), one unbiased_hsic per pair."""
    def mean_hsic(i_side, i, j_side, j):
        values = [unbiased_hsic(x[i].double() @ x[i].double().T, y[j].double() @ y[j].double().T)
                  for x, y in zip(i_side, j_side)]
        return torch.stack(values).mean()

    a, b = len(batches_a[0]), len(batches_b[0])
    return torch.tensor([
        [mean_hsic(batches_a, i, batches_b, j).item()
         / math.sqrt(mean_hsic(batches_a, i, batches_a, i) * mean_hsic(batches_b, j, batches_b, j))
         for j in range(b)]
        for i in range(a)
    ], dtype=torch.float64)


def states(metric):
    return {name: getattr(metric, name).clone() for name in metric._defaults}


def test_cross_model_cka_is_the_mean_of_per_batch_unbiased_hsic():
    layers_a, layers_b = model_layers(seed=1), model_layers(widths=(4, 6), seed=2)
    layers_b[0] = layers_b[0] + layers_a[1][:, :4]  # some shared signal
    batches_a, batches_b = minibatches(layers_a, 48), minibatches(layers_b, 48)
    metric = LinearCKA(num_layers_a=3, num_layers_b=2)
    for a, b in zip(batches_a, batches_b):
        metric.update(a, b)
    cka = metric.compute()
    assert cka.shape == (3, 2) and cka.dtype == torch.float64
    assert metric.num_batches.item() == 4 and metric.num_skipped.item() == 0
    torch.testing.assert_close(cka, expected_cka(batches_a, batches_b), atol=1e-10, rtol=0)


def test_within_model_matrix_is_symmetric_with_ones_on_the_diagonal():
    layers = model_layers(seed=3)
    metric = LinearCKA(num_layers_a=3)
    cross = LinearCKA(num_layers_a=3, num_layers_b=3)
    for batch in minibatches(layers, 64):
        metric.update(batch)
        cross.update(batch, batch)
    cka = metric.compute()
    assert cka.shape == (3, 3) and torch.equal(cka, cka.T)
    torch.testing.assert_close(cka.diagonal(), torch.ones(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(cka, cross.compute(), atol=1e-12, rtol=0)
    torch.testing.assert_close(cka, expected_cka(minibatches(layers, 64), minibatches(layers, 64)), atol=1e-10, rtol=0)
    assert 0.1 < cka[0, 1] < 0.99  # the layers are related but not the same


def test_one_minibatch_equals_the_unbiased_linear_cka():
    x, y = model_layers(samples=50, widths=(6, 4), seed=4)
    metric = LinearCKA(num_layers_a=1, num_layers_b=1)
    metric.update([x], [y])
    # one layer each: torchmetrics squeezes the (1, 1) result to a 0-d tensor
    assert metric.compute().item() == pytest.approx(linear_cka(x, y, unbiased=True).item(), abs=1e-12)


def test_batches_of_fewer_than_four_samples_are_skipped_and_counted():
    layers = model_layers(samples=100, seed=5)
    reference, metric = LinearCKA(num_layers_a=3), LinearCKA(num_layers_a=3)
    for batch in minibatches(layers[:], 32)[:3]:  # 96 samples in 3 batches
        reference.update(batch)
        metric.update(batch)
    metric.update([layer[96:99] for layer in layers])  # 3 samples
    metric.update([layer[:0] for layer in layers])  # none
    assert metric.num_batches.item() == 3 and metric.num_skipped.item() == 2
    torch.testing.assert_close(metric.compute(), reference.compute(), atol=0, rtol=0)
    only_small = LinearCKA(num_layers_a=3)
    only_small.update([layer[:3] for layer in layers])
    with pytest.raises(SemvecValueError, match=r"no minibatch of at least 4 samples \(1 smaller ones skipped\)"):
        only_small.compute()


def test_a_constant_layer_gives_a_nan_row_and_column():
    layers = model_layers(seed=6)
    layers[1] = torch.full_like(layers[1], 0.7)
    metric = LinearCKA(num_layers_a=3)
    for batch in minibatches(layers, 64):
        metric.update(batch)
    cka = metric.compute()
    assert cka[1].isnan().all() and cka[:, 1].isnan().all()
    assert not cka[[0, 2]][:, [0, 2]].isnan().any()


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (lambda x: [x, x], lambda x: [x], "activations_a has 2 layers, the metric was built for 3"),
        (lambda x: [x, x, x], lambda x: [x], "activations_b has 1 layers, the metric was built for 2"),
        (lambda x: [x, x, x], lambda x: None, "activations_b is missing"),
        (lambda x: x, lambda x: [x, x], "must be a list of .* got Tensor"),
        (lambda x: [x, x, x[:-1]], lambda x: [x, x], r"activations_a\[2\] has 15 samples but activations_a\[0\] has 16"),
        (lambda x: [x, x, x], lambda x: [x, x[:-1]], r"activations_b\[1\] has 15 samples"),
        (lambda x: [x, x, x], lambda x: [x, x.long()], r"activations_b\[1\] must be a floating-point"),
        (lambda x: [x, x, x], lambda x: [x, x[None]], r"activations_b\[1\] must be a 2-D"),
    ],
)
def test_bad_updates_raise_one_line_errors_and_change_no_state(a, b, message):
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(7))
    metric = LinearCKA(num_layers_a=3, num_layers_b=2)
    metric.update([x, x, x], [x, x])
    before = states(metric)
    with pytest.raises(SemvecValueError, match=message) as caught:
        metric.update(a(x), b(x))
    assert "\n" not in str(caught.value)
    after = states(metric)
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_bad_construction_and_b_on_a_single_model_metric():
    with pytest.raises(SemvecValueError, match="num_layers_a must be an integer >= 2.*num_layers_b"):
        LinearCKA(num_layers_a=1)
    with pytest.raises(SemvecValueError, match="num_layers_b must be an integer >= 1"):
        LinearCKA(num_layers_a=2, num_layers_b=0)
    with pytest.raises(SemvecValueError, match="num_layers_a must be an integer"):
        LinearCKA(num_layers_a=True, num_layers_b=2)
    metric = LinearCKA(num_layers_a=2)
    with pytest.raises(SemvecValueError, match="activations_b was given"):
        metric.update([torch.zeros(8, 2)] * 2, [torch.zeros(8, 2)])
    assert metric.num_batches.item() == 0


# --- two processes, gloo on CPU ----------------------------------------------------------


def _share(rank, world_size, batches):
    """One process's share: every other minibatch, then the synced matrices."""
    within, cross = LinearCKA(num_layers_a=3), LinearCKA(num_layers_a=2, num_layers_b=1)
    for batch in batches[rank::world_size]:
        within.update(batch)
        cross.update(batch[:2], batch[2:])
    return {"within": within.compute(), "cross": cross.compute(), "local_batches": within.num_batches.clone()}


@pytest.mark.timeout(120)
def test_two_processes_equal_one_process(tmp_path):
    """Each rank updates with its half of the minibatches (one of 3 samples, skipped); both
    get the matrices of one process fed all of them. The test process is rank 0."""
    layers = model_layers(samples=259, seed=8)
    batches = minibatches(layers, 32)  # 8 of 32 samples, then one of 3
    rank0, rank1 = run_on_two_ranks(_share, (batches,), tmp_path / "rank1.pt")

    within, cross = LinearCKA(num_layers_a=3), LinearCKA(num_layers_a=2, num_layers_b=1)
    for batch in batches:
        within.update(batch)
        cross.update(batch[:2], batch[2:])
    for got in (rank0, rank1):
        torch.testing.assert_close(got["within"], within.compute(), atol=1e-10, rtol=0)
        torch.testing.assert_close(got["cross"], cross.compute(), atol=1e-10, rtol=0)
    assert torch.equal(rank0["within"], rank1["within"]) and torch.equal(rank0["cross"], rank1["cross"])
    assert rank0["local_batches"].item() == 4 and rank1["local_batches"].item() == 4  # local state restored
