"""Wide layers: the vectors move, the subset path is the dense update on the subset's neurons.

Written against the public API only: the initial vectors come from a run whose optimizer has a
learning rate of 0 (the same seed gives the same initialisation), the per-step vectors from
``semantic_vectors`` read by a callback placed after the ``SemanticVectorCallback``.
"""

import lightning.pytorch as pl
import pytest
import torch
from tiny_models import WideLinearNet, trainer_kwargs

from lightning_semvec import SemanticVectorCallback
from lightning_semvec.functional import alignment_loss


def fit(semvec, width, *extra_callbacks, **overrides):
    pl.seed_everything(0, verbose=False)
    model = WideLinearNet(width=width)
    kwargs = trainer_kwargs(max_epochs=1, **overrides)
    pl.Trainer(callbacks=[semvec, *extra_callbacks], **kwargs).fit(model)
    return model


def frozen_sgd(params):
    return torch.optim.SGD(params, lr=0.0)


def initial_vectors(width, dim):
    """The seeded initial vectors: one step of an optimizer that cannot move them."""
    semvec = SemanticVectorCallback(layers="wide", dim=dim, optimizer=frozen_sgd)
    fit(semvec, width, max_steps=1)
    return semvec.semantic_vectors["wide"]


class RecordSteps(pl.Callback):
    """Per training step: the ``wide`` layer's activations and the vectors after the update."""

    def __init__(self, semvec):
        self.semvec, self.activations, self.vectors, self.handle = semvec, [], [], None

    def on_train_start(self, trainer, pl_module):
        def hook(module, inputs, output):
            if module.training:
                self.activations.append(output.detach().clone())

        self.handle = pl_module.wide.register_forward_hook(hook)

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.vectors.append(self.semvec.semantic_vectors["wide"])

    def on_train_end(self, trainer, pl_module):
        self.handle.remove()


def test_wide_layer_vectors_move_on_every_step_and_none_is_skipped():
    """Default K=4096 on a 6000-neuron layer: every update is applied and moves the vectors."""
    width, dim = 6000, 8
    semvec = SemanticVectorCallback(layers="wide", dim=dim)
    fit(semvec, width)  # 96 samples / 16 = 6 updates
    start = initial_vectors(width, dim)
    vectors = semvec.semantic_vectors["wide"]
    assert vectors.shape == (width, dim) and torch.isfinite(vectors).all()
    assert semvec.skipped_steps() == {"wide": 0}
    moved = (vectors != start).any(dim=1)
    # 6 subsets of 4096 of 6000 neurons: all but about 6000 * (1904/6000)**6 = 6 are drawn.
    assert int(moved.sum()) > width - 100


def test_with_every_neuron_in_the_subset_each_form_equals_the_dense_form():
    """K >= N uses every neuron: each form and K give the dense-form vectors (float tolerance).

    SGD, not Adam: Adam divides by the gradient's running scale, so a near-zero gradient
    component turns float32 rounding (the forms sum the same terms in another order) into
    visible differences; SGD keeps them at rounding size.
    """
    width, dim, lr = 600, 4, 100.0  # a row's gradient is tiny at N = 600: a large SGD lr

    def vectors(form, max_neurons):
        semvec = SemanticVectorCallback(layers="wide", dim=dim, optimizer="sgd", lr=lr,
                                        form=form, max_neurons_per_step=max_neurons)
        fit(semvec, width)
        assert semvec.skipped_steps() == {"wide": 0}
        return semvec.semantic_vectors["wide"]

    expected = vectors("dense", None)
    start = initial_vectors(width, dim)
    moved = (expected - start).abs().amax(dim=1)
    assert (moved > 1e-3).all() and moved.median() > 1e-2, moved.median()
    for form, max_neurons in [("factorized", None), ("auto", width), ("dense", 10_000)]:
        got = vectors(form, max_neurons)
        # Compared as displacements from the start, so the tolerance is relative to the motion.
        torch.testing.assert_close(got - start, expected - start, rtol=1e-3, atol=1e-6,
                                   msg=lambda m, form=form, k=max_neurons: f"{form}, K={k}: {m}")


@pytest.mark.parametrize("form", ["dense", "factorized"])
def test_each_subset_step_is_the_dense_step_on_its_neurons_and_leaves_the_others(form):
    """K < N with SGD: a step changes exactly K rows, by the dense step on those K neurons."""
    width, k, dim, lr = 300, 50, 3, 2.0
    semvec = SemanticVectorCallback(
        layers="wide", dim=dim, optimizer="sgd", lr=lr, form=form, max_neurons_per_step=k
    )
    recorder = RecordSteps(semvec)
    fit(semvec, width, recorder)
    assert len(recorder.activations) == len(recorder.vectors) == 6
    before = initial_vectors(width, dim)
    subsets = []
    for acts, after in zip(recorder.activations, recorder.vectors):
        # ``wide`` is a Linear layer (no dead neurons): every sampled neuron gets a gradient.
        changed = (after != before).any(dim=1).nonzero().squeeze(1)
        assert changed.numel() == k
        subsets.append(set(changed.tolist()))
        used = torch.nn.Parameter(before[changed].clone())
        loss, _ = alignment_loss(acts[:, changed], used)
        loss.backward()
        with torch.no_grad():
            expected = before.clone()
            expected[changed] = used - lr * used.grad
        torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-6)
        before = after
    assert len(set.union(*subsets)) > 2 * k  # a fresh subset each step
    assert semvec.skipped_steps() == {"wide": 0}
