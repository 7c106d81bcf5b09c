"""``ForwardHookManager``: one owner of the package's forward hooks and of what a call means."""

from __future__ import annotations

import copy
import pickle

import lightning.pytorch as pl
import pytest
import torch
from tiny_models import TinyConvNet, trainer_kwargs
from torch import nn
from torch.utils.checkpoint import checkpoint

from lightning_semvec import SemanticVectorCallback
from lightning_semvec._utils.model_guard import preserved_model
from lightning_semvec.capture.hooks import ForwardHookManager
from lightning_semvec.distillation.capture import OutputCapture
from lightning_semvec.errors import SemvecValueError


def net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_handles_are_removed_when_the_block_raises():
    model = net()
    with pytest.raises(RuntimeError, match="boom"), ForwardHookManager() as hooks:
        hooks.add("1", model[1], lambda *args: None)
        assert len(model[1]._forward_hooks) == 1
        raise RuntimeError("boom")
    assert not model[1]._forward_hooks and hooks.handles == []


def test_only_its_own_handles_go_and_the_guard_edits_no_hooks():
    model = net()
    theirs = model[1].register_forward_hook(lambda *args: None)
    with preserved_model(model), ForwardHookManager() as hooks:
        hooks.add("1", model[1], lambda *args: None)
        added_inside = model[0].register_forward_hook(lambda *args: None)
    # the guard leaves hooks alone (it no longer edits the private dicts): a hook someone
    # else added inside the block is theirs to remove; the manager removed only its own
    assert list(model[1]._forward_hooks) == [theirs.id]
    assert list(model[0]._forward_hooks) == [added_inside.id]


def test_a_recomputation_inside_backward_is_not_a_call():
    model = net()
    calls = []
    with ForwardHookManager() as hooks:
        hooks.add("1", model[1], lambda name, output, call: calls.append(call))
        x = torch.randn(5, 3, requires_grad=True)
        checkpoint(model, x, use_reentrant=False).sum().backward()
    assert calls == [0]  # the forward's call; not the recomputation during backward
    assert x.grad is not None


def test_second_call_policy():
    shared = nn.ReLU()
    twice = nn.Sequential(shared, nn.Linear(3, 3), shared)
    seen = []
    with ForwardHookManager(second_call="count") as hooks:
        hooks.add("act", shared, lambda name, output, call: seen.append(call))
        twice(torch.zeros(2, 3))
        hooks.new_forward()
        twice(torch.zeros(2, 3))
    assert seen == [0, 1, 0, 1]
    with ForwardHookManager(second_call="error", who="me") as hooks:
        hooks.add("act", shared, lambda *args: None)
        with pytest.raises(SemvecValueError, match="me: layer 'act' ran more than once"):
            twice(torch.zeros(2, 3))


class CheckpointedConvNet(TinyConvNet):
    """``features`` runs under activation checkpointing: backward recomputes it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(checkpoint(self.features, x, use_reentrant=False))


def test_the_callback_reads_no_sample_from_backward_recomputation(recwarn):
    semvec = SemanticVectorCallback(layers=["features.2", "classifier.2"], dim=2, analysis=None)
    rows = []
    original = semvec._update
    semvec._update = lambda t, m, activations, c: (  # type: ignore[method-assign]
        rows.append({name: a.shape[0] for name, a in activations.items()}),
        original(t, m, activations, c))
    model = CheckpointedConvNet(batch_size=16, n=32)
    pl.Trainer(callbacks=[semvec], **trainer_kwargs(max_steps=2)).fit(model)
    # 16 images (the conv averaged over positions), 16 logits: the forward's call only
    assert rows == [{"features.2": 16, "classifier.2": 16}] * 2
    assert not [w for w in recwarn if "more than once" in str(w.message)]


def test_modules_hooked_by_a_manager_pickle_and_copy_with_their_hooks():
    owner = OutputCapture()
    model = net()
    owner.attach(model[1], "relu")
    model.capture = owner  # type: ignore[assignment]  # held as the distillation modules hold it
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with clone.capture.recording() as outputs:
            clone(torch.zeros(2, 3))
            assert [tuple(out.shape) for out in outputs["relu"]] == [(2, 4)]
        assert clone.capture is not owner and not owner.outputs
