"""The closed-form gradients agree with autograd through ``alignment_loss``, layer by layer."""

import pytest
import torch

from lightning_semvec.functional import alignment_loss
from lightning_semvec.functional.alignment_gradient import (
    FUSED_MAX_NEURONS,
    alignment_gradients,
    plan_alignment_runs,
)


def autograd_reference(acts, vectors, kind, form, weights):
    v = vectors.clone().requires_grad_()
    loss, alive = alignment_loss(acts, v, kind, form, weights)
    ok = bool(torch.isfinite(loss)) and int(alive.sum()) >= 2
    if ok:
        loss.backward()
    return loss.detach(), (v.grad if ok else None), ok


@pytest.mark.parametrize("kind", ["pearson", "cosine"])
@pytest.mark.parametrize("form", ["dense", "factorized"])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradients_and_losses_match_autograd_layer_by_layer(kind, form, padded, seed):
    generator = torch.Generator().manual_seed(seed)
    sizes = [5, 1, 8, 3, 12, 2]
    acts = [torch.randn(25, n, generator=generator).relu() for n in sizes]
    acts[2][:, 1] = 3.0  # a dead neuron in a live layer
    acts[3][4, 0] = float("nan")  # a non-finite layer
    acts[5][:, :] = 0.0  # a layer with no live neuron
    vectors = [torch.randn(n, 4, generator=generator) for n in sizes]
    weights = torch.tensor([1.0] * 20 + [0.0] * 5) if padded else None
    out = alignment_gradients(torch.cat(acts, dim=1), vectors, kind, form, weights)
    assert out.ok.tolist() == [True, False, True, False, True, False]
    for layer, (a, v) in enumerate(zip(acts, vectors)):
        loss, grad, ok = autograd_reference(a, v, kind, form, weights)
        assert ok == bool(out.ok[layer])
        if ok:
            torch.testing.assert_close(out.gradients[layer], grad, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(out.losses[layer], loss, rtol=1e-4, atol=1e-6)
        else:
            assert torch.equal(out.gradients[layer], torch.zeros_like(v))
    assert torch.isnan(out.losses[3]) and not torch.isnan(out.losses[5])


def test_without_loss_the_gradients_are_the_same():
    acts, vectors = torch.randn(16, 30), [torch.randn(10, 3), torch.randn(20, 3)]
    for form in ("dense", "factorized"):
        with_loss = alignment_gradients(acts, vectors, form=form)
        without = alignment_gradients(acts, vectors, form=form, with_loss=False)
        assert without.losses is None
        for a, b in zip(with_loss.gradients, without.gradients):
            torch.testing.assert_close(a, b)


def test_low_precision_activations_are_computed_in_float32():
    acts, vectors = torch.randn(32, 6), [torch.randn(6, 3)]
    full = alignment_gradients(acts, vectors)
    half = alignment_gradients(acts.bfloat16(), vectors)
    assert half.gradients[0].dtype == torch.float32
    torch.testing.assert_close(half.gradients[0], full.gradients[0], rtol=0.1, atol=0.02)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="one column per row of the vectors"):
        alignment_gradients(torch.randn(8, 5), [torch.randn(4, 2)])
    with pytest.raises(ValueError, match="one column per row of the vectors"):
        alignment_gradients(torch.randn(8, 5), [])
    with pytest.raises(ValueError, match="Unknown form"):
        alignment_gradients(torch.randn(8, 4), [torch.randn(4, 2)], form="sparse")
    with pytest.raises(ValueError, match="Unknown similarity kind"):
        alignment_gradients(torch.randn(8, 4), [torch.randn(4, 2)], kind="spearman")


def test_plan_packs_narrow_dense_layers_and_keeps_wide_ones_alone():
    assert plan_alignment_runs(64, [16, 32, 10], 16) == [("dense", [0, 1, 2])]
    half = FUSED_MAX_NEURONS // 2
    runs = plan_alignment_runs(100_000, [half, half, 8, 20_000], 16)
    assert runs == [("dense", [0, 1]), ("dense", [2]), ("factorized", [3])]
    assert plan_alignment_runs(64, [16, 32], 16, form="factorized") == [
        ("factorized", [0]), ("factorized", [1])]
