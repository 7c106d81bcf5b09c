"""Layers that learn nothing (a constant output, one neuron): warned of once, marked
``learned=False`` in the knowledge, and left out by the report and static distillation."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from tiny_models import QUIET, TinyConvNet, data, mlp, trainer_kwargs
from torch import Tensor, nn

from lightning_semvec import SemanticVectorCallback, StaticDistillationModule, StaticKnowledge, embed_neurons
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.report import write_report


class WithDeadEnds(TinyConvNet):
    """TinyConvNet with two side layers that cannot learn: ``const`` (4 neurons, zero weights
    and bias, so its output is always 0) and ``one`` (a single neuron)."""

    def __init__(self) -> None:
        super().__init__()
        self.const = nn.Linear(36, 4)
        self.one = nn.Linear(36, 1)
        with torch.no_grad():
            self.const.weight.zero_()
            self.const.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        return super().forward(x) + 0 * self.const(flat).sum(1, keepdim=True) + 0 * self.one(flat)


def fit(epochs: int = 2) -> tuple[SemanticVectorCallback, list[str]]:
    pl.seed_everything(0, verbose=False)
    semvec = SemanticVectorCallback(layers=["classifier.2", "const", "one"], dim=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pl.Trainer(callbacks=[semvec], **trainer_kwargs(max_epochs=epochs)).fit(WithDeadEnds())
    return semvec, [str(w.message) for w in caught if "learned nothing" in str(w.message)]


@pytest.fixture(scope="module")
def fitted() -> tuple[SemanticVectorCallback, list[str]]:
    return fit()


def test_each_layer_that_skipped_every_update_is_warned_of_once_saying_why(fitted) -> None:
    semvec, messages = fitted
    assert semvec.skipped_steps() == {"classifier.2": 0, "const": 12, "one": 12}
    assert len(messages) == 2  # once per layer over two epochs
    const, one = sorted(messages, key=lambda m: "'one'" in m)
    assert "'const'" in const and "constant" in const and "random start" in const
    assert "'one'" in one and "one neuron" in one


def test_the_knowledge_marks_them_not_learned_and_the_file_keeps_the_mark(fitted, tmp_path) -> None:
    semvec, _ = fitted
    knowledge = semvec.to_knowledge()
    assert {n: k.learned for n, k in knowledge.layers.items()} == {
        "classifier.2": True, "const": False, "one": False}
    assert "not learned" in repr(knowledge)
    path = semvec.export_knowledge(tmp_path / "k.semvec.safetensors")
    loaded = StaticKnowledge.load(path)
    assert loaded == knowledge and not loaded["const"].learned


def test_a_layer_that_learned_after_skipping_some_steps_is_learned() -> None:
    from lightning_semvec import SemanticVectors

    vectors = SemanticVectors(dim=2)
    vectors.step({"fc": torch.ones(8, 3)})  # constant: skipped
    assert vectors.unlearned_layers() == ["fc"]
    vectors.step({"fc": torch.randn(8, 3, generator=torch.Generator().manual_seed(0))})
    assert vectors.skipped_steps() == {"fc": 1} and vectors.unlearned_layers() == []


def test_the_report_leaves_them_out_and_names_them(fitted, tmp_path) -> None:
    semvec, _ = fitted
    path = semvec.export_knowledge(tmp_path / "k.semvec.safetensors")
    page = write_report(path, tmp_path / "report").read_text("utf-8")
    assert "learned nothing" in page and "const, one" in page
    figures = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert figures and all("classifier.2" in name for name in figures)


def test_static_distillation_refuses_an_unlearned_teacher_layer(fitted) -> None:
    semvec, _ = fitted
    knowledge = semvec.to_knowledge()
    student = nn.Sequential(nn.Flatten(), nn.Linear(36, 4), nn.ReLU(), nn.Linear(4, 3))
    with pytest.raises(SemvecValueError, match="'const'.*learned nothing.*another teacher layer"):
        StaticDistillationModule(student, knowledge, {"1": "const"}, soft_targets=0.0, num_classes=3)
    module = StaticDistillationModule(student, knowledge, {"3": "classifier.2"}, soft_targets=0.0,
                                      num_classes=3)
    assert module.layer_map == {"3": "classifier.2"}


def test_similarity_soft_targets_refuse_an_unlearned_logit_layer() -> None:
    knowledge = StaticKnowledge.from_vectors({"logits": torch.randn(3, 2)}, learned=False)
    student = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    with pytest.raises(SemvecValueError, match="learned nothing.*class_means"):
        StaticDistillationModule(student, knowledge, {}, soft_targets=1.0,
                                 soft_target_source="similarity", num_classes=3)


def test_embed_neurons_marks_a_constant_layer_not_learned() -> None:
    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.const = mlp(0), nn.Linear(6, 3)
            with torch.no_grad():
                self.const.weight.zero_()

        def forward(self, x: Tensor) -> Tensor:
            return self.net(x) + 0 * self.const(x).sum()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        knowledge = embed_neurons(Wrapped(), data(), ["net.1", "const"], dim=2, trainer=QUIET)
    assert {n: k.learned for n, k in knowledge.layers.items()} == {"net.1": True, "const": False}
