"""Static distillation from a knowledge file, the teacher-run baselines and their shared base."""

from __future__ import annotations

import copy
import functools
import math
import pickle
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from tiny_models import trainer_kwargs
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_semvec import (
    SemanticVectorCallback,
    StaticDistillationModule,
    StaticKnowledge,
    StudentModule,
    TeacherDistillationModule,
)
from lightning_semvec.data import DigitsDataModule


class Teacher(pl.LightningModule):
    """A tiny digits classifier; ``classifier.2`` is its logit Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(x.flatten(1))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class SmallNet(nn.Module):
    """The student: ``fc1`` (16 hidden), ``fc2`` (the 10 logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class SmallNetWithSpare(SmallNet):
    """Has a layer, ``unused``, that its forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Linear(16, 10)


class DDPStudent(StaticDistillationModule):
    """Module-level, so that the ddp_spawn workers can unpickle it."""

    def __init__(self, knowledge: str | Path) -> None:
        super().__init__(
            student=SmallNet(), knowledge=knowledge, layer_map={"fc2": "classifier.2", "fc1": "classifier.2"}
        )


class SaveWeights(pl.Callback):
    """Each process writes its final weights (ddp_spawn returns nothing of the workers)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save(state, self.directory / f"rank{trainer.global_rank}.pt")


def quiet(**overrides: Any) -> dict[str, Any]:
    """Small, quiet CPU runs (validation on unless told otherwise); every step is a logging
    step, so the per-step diagnostics reach ``callback_metrics``."""
    kwargs = trainer_kwargs(max_epochs=1, limit_train_batches=4, limit_val_batches=2, log_every_n_steps=1)
    kwargs.update(overrides)
    return kwargs


@pytest.fixture(scope="module")
def datamodule() -> DigitsDataModule:
    return DigitsDataModule(batch_size=32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Teacher, SemanticVectorCallback, Path]:
    """A teacher trained 2 short epochs with the callback on its logits, knowledge exported."""
    pl.seed_everything(0, verbose=False)
    teacher = Teacher()
    semvec = SemanticVectorCallback(layers=["classifier.2", "classifier.1"], dim=4)
    trainer = pl.Trainer(callbacks=[semvec], **quiet(max_epochs=2, limit_train_batches=15, limit_val_batches=0))
    trainer.fit(teacher, DigitsDataModule(batch_size=32))
    path = semvec.export_knowledge(tmp_path_factory.mktemp("teacher") / "teacher.semvec.safetensors")
    return teacher, semvec, path


@pytest.fixture
def knowledge(trained: tuple[Teacher, SemanticVectorCallback, Path]) -> StaticKnowledge:
    return StaticKnowledge.load(trained[2])


def student_params(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


# ----------------------------------------------------------------------------- the issue's code


def test_issue_user_code_runs_as_written(trained, datamodule) -> None:
    _, semvec, knowledge_path = trained
    semvec.export_knowledge(knowledge_path, overwrite=True)  # the fixture wrote it once already
    from lightning_semvec import StaticDistillationModule, StaticKnowledge

    knowledge = StaticKnowledge.load(knowledge_path)  # no teacher weights needed

    class Student(StaticDistillationModule):
        def __init__(self):
            super().__init__(
                student=SmallNet(), knowledge=knowledge, layer_map={"fc2": "classifier.2"}, weight=1.0
            )

    student = Student()
    before = student_params(student.student)
    trainer = pl.Trainer(**quiet(max_epochs=2))
    trainer.fit(student, datamodule)

    metrics = trainer.callback_metrics
    for key in ("train/task_loss", "train/static_loss/fc2", "train/loss", "train/acc", "val/acc", "val/loss"):
        assert key in metrics and math.isfinite(float(metrics[key])), key
    assert any(not torch.equal(before[k], v) for k, v in student_params(student.student).items())
    assert len(student.projections) == 0  # 10 logits on both sides: no projection
    test = trainer.test(student, datamodule, verbose=False)[0]
    assert 0.0 <= test["test/acc"] <= 1.0

    # A subclass without arguments reloads from its checkpoint, vectors included.
    trainer.save_checkpoint(Path(knowledge_path).parent / "student.ckpt")
    reloaded = Student.load_from_checkpoint(Path(knowledge_path).parent / "student.ckpt")
    assert torch.equal(reloaded.teacher_vectors["classifier.2"], student.teacher_vectors["classifier.2"])


def test_teacher_vectors_are_buffers_unchanged_by_training(knowledge, datamodule) -> None:
    module = StaticDistillationModule(SmallNet(), knowledge, {"fc2": "classifier.2", "fc1": "classifier.1"})
    expected = {name: knowledge.vectors(name).clone() for name in ("classifier.2", "classifier.1")}
    parameter_ids = {id(p) for p in module.parameters()}
    state = module.state_dict(keep_vars=True)
    assert {"teacher_vectors_classifier%2E1", "teacher_vectors_classifier%2E2"} <= set(state)
    for vectors in module.teacher_vectors.values():
        assert id(vectors) not in parameter_ids and not vectors.requires_grad
        assert any(v is vectors for v in state.values())  # persistent buffer: in checkpoints
    pl.Trainer(**quiet()).fit(module, datamodule)
    for name, vectors in module.teacher_vectors.items():
        assert torch.equal(vectors, expected[name]), name


def test_layer_names_are_escaped_reversibly_and_a_0_1_state_dict_still_loads(knowledge) -> None:
    def build() -> StaticDistillationModule:
        nested = nn.Sequential(SmallNet())  # layers "0.fc1" (16 wide) and "0.fc2"
        return StaticDistillationModule(nested, knowledge, {"0.fc1": "classifier.2", "0.fc2": "classifier.2"})

    trained = build()
    with torch.no_grad():
        trained.projection_for("0.fc1").weight.fill_(0.5)  # type: ignore[union-attr]
    state = trained.state_dict()
    assert {"teacher_vectors_classifier%2E2", "projections.0%2Efc1.weight"} <= set(state)
    # the keys 0.1 wrote (dots to "_") load under today's names, strictly
    renamed = {"teacher_vectors_classifier%2E2": "teacher_vectors_classifier_2",
               "projections.0%2Efc1.weight": "projections.0_fc1.weight"}
    old_style = {renamed.get(key, key): value for key, value in state.items()}
    fresh = build()
    fresh.load_state_dict(old_style, strict=True)
    assert all(torch.equal(value, state[key]) for key, value in fresh.state_dict().items())


def test_knowledge_path_is_accepted(trained) -> None:
    module = StaticDistillationModule(SmallNet(), str(trained[2]), {"fc2": "classifier.2"})
    assert module.num_classes == 10 and module.layer_map == {"fc2": "classifier.2"}


# ----------------------------------------------------------------------------- projection


def test_projection_maps_student_width_to_teacher_width(knowledge, datamodule) -> None:
    # fc1 has 16 neurons, classifier.2 has 10; fc2 and classifier.2 both have 10.
    module = StaticDistillationModule(SmallNet(), knowledge, {"fc1": "classifier.2", "fc2": "classifier.2"})
    projection = module.projection_for("fc1")
    assert isinstance(projection, nn.Linear) and projection.bias is None
    assert (projection.in_features, projection.out_features) == (16, 10)
    assert module.projection_for("fc2") is None
    before = projection.weight.detach().clone()
    trainer = pl.Trainer(**quiet(limit_val_batches=0))
    trainer.fit(module, datamodule)
    assert not torch.equal(before, projection.weight)  # trained with the student
    assert math.isfinite(float(trainer.callback_metrics["train/static_loss/fc1"]))


def test_projection_off_with_different_widths_is_a_clear_error(knowledge) -> None:
    with pytest.raises(ValueError, match="16 neurons.*has 10.*projection=True"):
        StaticDistillationModule(SmallNet(), knowledge, {"fc1": "classifier.2"}, projection=False)
    # Same widths need no projection.
    StaticDistillationModule(SmallNet(), knowledge, {"fc2": "classifier.2"}, projection=False)


def test_width_of_a_layer_without_one_must_be_given(knowledge) -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 10))
    with pytest.raises(ValueError, match="student_widths"):
        StaticDistillationModule(net, knowledge, {"2": "classifier.2"})
    module = StaticDistillationModule(net, knowledge, {"2": "classifier.2"}, student_widths={"2": 12})
    assert module.projection_for("2").in_features == 12


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layer_map": {"fc3": "classifier.2"}}, ValueError, "no layer 'fc3'.*Closest.*fc"),
        ({"layer_map": {"fc*": "classifier.2"}}, ValueError, "pattern"),
        ({"layer_map": {"fc2": "classifier.9"}}, ValueError, r"no teacher layer 'classifier.9'.*\['classifier.1', 'classifier.2'\]"),
        ({"layer_map": {}}, ValueError, "Nothing to distil"),
        ({"layer_map": ["fc2"]}, TypeError, "dict"),
        ({"layer_map": {"fc2": "classifier.2"}, "weight": {"fc1": 1.0}}, ValueError, "exactly the student layers"),
        ({"layer_map": {"fc2": "classifier.2"}, "weight": -1.0}, ValueError, "weight must be a number >= 0"),
        ({"layer_map": {"fc2": "classifier.2"}, "similarity": "euclid"}, ValueError, "similarity"),
        ({"layer_map": {"fc2": "classifier.2"}, "form": "sparse"}, ValueError, "form"),
        ({"layer_map": {"fc2": "classifier.2"}, "num_classes": 7}, ValueError, "names 10 classes"),
        ({"layer_map": {"fc2": "classifier.2"}, "optimizer": 3}, TypeError, "optimizer must be a callable"),
        ({"layer_map": {"fc2": "classifier.2"}, "lr_scheduler": "cosine"}, TypeError, "lr_scheduler must be"),
        ({"layer_map": {"fc2": "classifier.2"}, "lr_rate": 0.1}, TypeError, "unexpected keyword argument 'lr_rate'"),
        ({"layer_map": {"fc2": "classifier.2"}, "student_widths": {"fc9": 3}}, ValueError, "not keys of layer_map"),
        ({"layer_map": {}, "soft_targets": 1.0, "soft_target_layer": "classifier.1"}, ValueError, "one neuron per class"),
        ({"layer_map": {}, "soft_targets": 1.0, "soft_target_temperature": 0.0}, ValueError, "temperature"),
    ],
)
def test_bad_arguments(knowledge, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        StaticDistillationModule(SmallNet(), knowledge, **kwargs)


def test_num_classes_without_class_names_is_the_students_output_width() -> None:
    knowledge = StaticKnowledge.from_vectors({"logits": torch.randn(10, 3)})
    assert StaticDistillationModule(SmallNet(), knowledge, {"fc2": "logits"}).num_classes == 10
    ends_in_identity = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Identity())
    with pytest.raises(ValueError, match="pass num_classes"):
        StaticDistillationModule(ends_in_identity, knowledge, {"1": "logits"})
    assert StaticDistillationModule(ends_in_identity, knowledge, {"1": "logits"}, num_classes=10).num_classes == 10


def test_num_classes_from_the_knowledge_class_statistics() -> None:
    statistics = {"logits": {"class_counts": torch.full((7,), 5.0)}}
    knowledge = StaticKnowledge.from_vectors({"logits": torch.randn(7, 3)}, statistics=statistics)
    ends_in_identity = nn.Sequential(nn.Flatten(), nn.Linear(64, 7), nn.Identity())
    assert StaticDistillationModule(ends_in_identity, knowledge, {"1": "logits"}).num_classes == 7


def test_failed_step_leaves_the_model_unchanged(knowledge, datamodule) -> None:
    # "unused" exists but the forward never calls it: an error inside the step.
    module = StaticDistillationModule(SmallNetWithSpare(), knowledge, {"unused": "classifier.2"})
    before = student_params(module)
    with pytest.raises(RuntimeError, match="'unused'.*not called"):
        pl.Trainer(**quiet(limit_val_batches=0)).fit(module, datamodule)
    after = student_params(module)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_batch_of_one_skips_the_static_term_without_nan(knowledge) -> None:
    data = TensorDataset(torch.rand(17, 1, 8, 8), torch.randint(0, 10, (17,)))
    module = StaticDistillationModule(SmallNet(), knowledge, {"fc1": "classifier.2"})
    with pytest.warns(UserWarning, match="only 1 sample"):
        pl.Trainer(**quiet(limit_val_batches=0, limit_train_batches=None)).fit(
            module, DataLoader(data, batch_size=16)
        )
    assert all(torch.isfinite(p).all() for p in module.parameters())


# ----------------------------------------------------------------------------- hooks


def test_hooks_record_only_inside_steps_and_survive_copies(knowledge) -> None:
    module = StaticDistillationModule(SmallNet(), knowledge, {"fc1": "classifier.2"})
    x = torch.rand(4, 1, 8, 8)
    module(x)
    assert module._capture.outputs == {}
    for clone in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):
        with clone.capturing() as captured:
            clone(x)
            assert list(captured) == ["student:fc1"]
            assert captured["student:fc1"][0].requires_grad  # kept in the graph
        assert module._capture.outputs == {}  # the original's capture saw nothing


# ----------------------------------------------------------------------------- soft targets


def test_soft_targets_from_the_logit_layer(knowledge, datamodule) -> None:
    module = StaticDistillationModule(
        SmallNet(), knowledge, {"fc2": "classifier.2"}, soft_targets=0.5, soft_target_temperature=0.2,
        soft_target_source="similarity",
    )
    assert module.soft_target_layer == "classifier.2"  # the 10-neuron layer, not classifier.1
    probs = module.soft_target_probs
    expected = torch.softmax(knowledge.semantic_similarity("classifier.2") / 0.2, dim=1)
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(10))
    assert torch.equal(probs.argmax(dim=1), torch.arange(10))
    trainer = pl.Trainer(**quiet())
    trainer.fit(module, datamodule)
    for key in ("train/soft_target_loss", "val/soft_target_loss"):
        assert math.isfinite(float(trainer.callback_metrics[key])), key


def test_soft_targets_alone(knowledge, datamodule) -> None:
    module = StaticDistillationModule(SmallNet(), knowledge, {}, soft_targets=1.0, soft_target_source="similarity")
    inputs, targets = next(iter(datamodule.train_dataloader()))
    with module.capturing() as captured:
        terms = module.distillation_losses(inputs, targets, module(inputs), captured)
    assert list(terms) == ["soft_target_loss"] and terms["soft_target_loss"].loss > 0


# ----------------------------------------------------------------------------- precision, DDP


def test_bf16_mixed_trains_with_finite_losses(knowledge, datamodule) -> None:
    module = StaticDistillationModule(
        SmallNet(), knowledge, {"fc1": "classifier.2", "fc2": "classifier.2"}, soft_targets=0.5
    )
    trainer = pl.Trainer(**quiet(precision="bf16-mixed"))
    trainer.fit(module, datamodule)
    for key in ("train/loss", "train/static_loss/fc1", "train/static_loss/fc2", "val/loss"):
        assert math.isfinite(float(trainer.callback_metrics[key])), key
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in module.parameters())


def test_ddp_two_processes_end_with_the_same_weights(trained, tmp_path) -> None:
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(
        callbacks=[SaveWeights(tmp_path)],
        **quiet(devices=2, strategy="ddp_spawn", limit_val_batches=0, limit_train_batches=3),
    )
    trainer.fit(DDPStudent(trained[2]), DigitsDataModule(batch_size=16))
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert rank0.keys() == rank1.keys() and "projections.fc1.weight" in rank0
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    fresh = DDPStudent(trained[2]).state_dict()
    assert not torch.equal(rank0["student.fc1.weight"], fresh["student.fc1.weight"])  # it trained


# ----------------------------------------------------------------------------- teacher-run baselines


@pytest.mark.parametrize("method", ["kd", "rkd", "sp", "cc", "pkt"])
def test_teacher_baseline_trains_a_step(trained, datamodule, method) -> None:
    teacher = copy.deepcopy(trained[0])
    teacher_before = student_params(teacher)
    module = TeacherDistillationModule(
        SmallNet(), teacher, num_classes=10, method=method,
        student_feature_layer="fc1", teacher_feature_layer="classifier.1",
    )
    student_before = student_params(module.student)
    trainer = pl.Trainer(**quiet(limit_train_batches=2, limit_val_batches=1))
    trainer.fit(module, datamodule)
    assert math.isfinite(float(trainer.callback_metrics[f"train/distill_loss/{method}"]))
    assert math.isfinite(float(trainer.callback_metrics["val/loss"]))
    assert any(not torch.equal(student_before[k], v) for k, v in student_params(module.student).items())
    assert all(torch.equal(teacher_before[k], v) for k, v in student_params(module.teacher).items())
    assert not any(p.requires_grad for p in module.teacher.parameters())
    assert not module.teacher.training
    optimizer = trainer.optimizers[0]
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in in_optimizer for p in module.teacher.parameters())


def test_teacher_stays_in_eval_mode() -> None:
    teacher = nn.Sequential(nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, 10))
    module = TeacherDistillationModule(SmallNet(), teacher, num_classes=10, method="kd")
    module.train()
    assert module.student.training and not module.teacher.training


def test_teacher_method_default_weights_and_errors() -> None:
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    weights = {
        m: TeacherDistillationModule(
            SmallNet(), teacher, 10, method=m, student_feature_layer="fc1", teacher_feature_layer="2"
        ).weight
        for m in ("kd", "rkd", "sp", "cc", "pkt")
    }
    assert weights == {"kd": 1.0, "rkd": 1.0, "sp": 3000.0, "cc": 0.02, "pkt": 30000.0}
    with pytest.raises(ValueError, match="student_feature_layer and teacher_feature_layer"):
        TeacherDistillationModule(SmallNet(), teacher, 10, method="sp")
    with pytest.raises(ValueError, match="Unknown method"):
        TeacherDistillationModule(SmallNet(), teacher, 10, method="crd")
    with pytest.raises(ValueError, match="no layer 'fc9'"):
        TeacherDistillationModule(
            SmallNet(), teacher, 10, method="sp", student_feature_layer="fc9", teacher_feature_layer="2"
        )


# ----------------------------------------------------------------------------- the plain base


def test_plain_student_and_overridable_parts(datamodule) -> None:
    class LabelSmoothed(StudentModule):
        def task_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
            return nn.functional.cross_entropy(logits, targets, label_smoothing=0.1)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    module = LabelSmoothed(SmallNet(), num_classes=10)
    trainer = pl.Trainer(**quiet())
    trainer.fit(module, datamodule)
    assert isinstance(trainer.optimizers[0], torch.optim.SGD)
    assert {"train/task_loss", "train/loss", "train/acc", "val/acc"} <= set(trainer.callback_metrics)
    scheduled = StudentModule(
        SmallNet(), num_classes=10, optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        lr_scheduler=functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=5),
    ).configure_optimizers()
    assert isinstance(scheduled["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
    with pytest.raises(ValueError, match="expected logits of shape"):
        StudentModule(SmallNet(), num_classes=3).training_step((torch.rand(4, 1, 8, 8), torch.zeros(4).long()), 0)


# ----------------------------------------------------------------------------- knowledge integration


def test_from_callback_on_a_trained_callback_round_trips(trained, tmp_path) -> None:
    _, semvec, _ = trained
    knowledge = StaticKnowledge.from_callback(semvec)
    assert knowledge.layer_names == ["classifier.1", "classifier.2"]  # the model's order
    assert knowledge.class_names == [str(d) for d in range(10)]
    assert knowledge.source_model is not None and knowledge.source_model.endswith("Teacher")
    assert knowledge.training_steps == 30
    for name, vectors in semvec.semantic_vectors.items():
        assert torch.equal(knowledge.vectors(name), vectors)
    loaded = StaticKnowledge.load(knowledge.save(tmp_path / "k.semvec.safetensors"))
    assert loaded == knowledge
