"""Class-level soft targets from the knowledge (``soft_target_source``), and the README's
distillation code with a knowledge file that has no class names."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from test_readme_snippets import ROOT, code_blocks
from tiny_models import trainer_kwargs
from torch import nn

from lightning_semvec import (
    SemanticVectorCallback,
    StaticDistillationModule,
    StaticKnowledge,
)
from lightning_semvec.data import DigitsDataModule
from lightning_semvec.distillation.soft_targets import soft_target_scores
from lightning_semvec.errors import SemvecValueError


def logits_knowledge(class_means: torch.Tensor | None, counts: torch.Tensor | None = None) -> StaticKnowledge:
    c = 3 if class_means is None else class_means.shape[0]
    stats = {}
    if class_means is not None:
        stats["class_means"] = class_means
    if counts is not None:
        stats["class_counts"] = counts
    return StaticKnowledge.from_vectors({"logits": torch.eye(c)}, statistics={"logits": stats} if stats else None,
                                        class_names=[str(i) for i in range(c)])


def student() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def test_class_means_give_softmax_of_the_mean_logits_over_the_temperature() -> None:
    means = torch.tensor([[4.0, 1.0, 0.0], [0.5, 3.0, 2.0], [0.0, 0.0, 5.0]])
    module = StaticDistillationModule(student(), logits_knowledge(means), {}, soft_targets=1.0,
                                      soft_target_temperature=2.0, soft_target_source="class_means")
    torch.testing.assert_close(module.soft_target_probs, torch.softmax(means / 2.0, dim=1))
    # A sample of class 1 is pulled towards row 1, whatever the sample.
    inputs, targets = torch.randn(4, 6), torch.tensor([1, 1, 1, 1])
    with module.capturing() as captured:
        terms = module.distillation_losses(inputs, targets, module(inputs), captured)
    expected = nn.functional.kl_div(torch.log_softmax(module(inputs), 1),
                                    torch.softmax(means / 2.0, 1)[targets], reduction="batchmean")
    torch.testing.assert_close(terms["soft_target_loss"].loss, expected)


def test_defaults_are_class_means_at_temperature_8() -> None:
    means = torch.tensor([[9.0, 1.0, 0.0], [0.5, 8.0, 2.0], [0.0, 0.0, 7.0]])
    module = StaticDistillationModule(student(), logits_knowledge(means), {})
    assert (module.soft_target_weight, module.soft_target_source, module.soft_target_temperature) == (
        1.0, "class_means", 8.0)
    torch.testing.assert_close(module.soft_target_probs, torch.softmax(means / 8.0, dim=1))


def test_similarity_source_has_its_own_default_temperature() -> None:
    knowledge = logits_knowledge(torch.randn(3, 3))
    module = StaticDistillationModule(student(), knowledge, {}, soft_target_source="similarity")
    assert module.soft_target_temperature == 0.5
    torch.testing.assert_close(module.soft_target_probs,
                               torch.softmax(knowledge.semantic_similarity("logits") / 0.5, dim=1))


def test_auto_without_class_statistics_leaves_soft_targets_off_with_a_warning() -> None:
    knowledge = logits_knowledge(None)
    with pytest.warns(UserWarning, match="no class statistics for layer 'logits'"):
        module = StaticDistillationModule(student(), knowledge, {"3": "logits"})
    assert module.soft_target_weight == 0 and module.soft_target_layer is None
    assert not hasattr(module, "soft_target_probs")
    inputs, targets = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    with module.capturing() as captured:
        assert list(module.distillation_losses(inputs, targets, module(inputs), captured)) == ["static_loss/3"]
    # With nothing else to distil, that is an error that says why.
    with pytest.raises(ValueError, match="Nothing to distil.*no class statistics"):
        StaticDistillationModule(student(), knowledge, {})
    # Class statistics that missed a class: "auto" also leaves the soft targets off, saying why.
    partial = logits_knowledge(torch.zeros(3, 3), torch.tensor([4.0, 0.0, 4.0]))
    with pytest.warns(UserWarning, match=r"no validation samples of classes \[1\]"):
        module = StaticDistillationModule(student(), partial, {"3": "logits"})
    assert module.soft_target_weight == 0
    # soft_targets=0 says "no soft targets" without a warning.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        StaticDistillationModule(student(), knowledge, {"3": "logits"}, soft_targets=0)


@pytest.mark.parametrize(
    ("knowledge", "source", "match"),
    [
        (logits_knowledge(None), "class_means", "has no class statistics for layer 'logits'"),
        (logits_knowledge(torch.zeros(3, 3), torch.tensor([4.0, 0.0, 4.0])), "class_means",
         r"no validation samples of classes \[1\]"),
        (logits_knowledge(torch.zeros(3, 3)), "class_mean", "Unknown soft_target_source 'class_mean'"),
    ],
)
def test_bad_soft_target_source_is_a_clear_error(knowledge, source, match) -> None:
    with pytest.raises(ValueError, match=match):
        StaticDistillationModule(student(), knowledge, {}, soft_targets=1.0, soft_target_source=source)


def test_scores_need_a_layer_with_class_means() -> None:
    knowledge = logits_knowledge(torch.ones(3, 3))
    assert soft_target_scores(knowledge, "logits", "class_means").shape == (3, 3)


@pytest.mark.timeout(300)
def test_readme_distillation_code_runs_with_knowledge_that_has_no_class_names(tmp_path, monkeypatch) -> None:
    """The README's student block, fed a knowledge file from a callback that knew no classes
    (a plain DataLoader, no datamodule): ``num_classes`` comes from the student."""
    monkeypatch.chdir(tmp_path)
    from lightning_semvec.models import ImageClassifier, SmallCNN

    datamodule = DigitsDataModule(batch_size=64)
    datamodule.setup()
    loader = torch.utils.data.DataLoader(datamodule.train_dataset, batch_size=64)
    semvec = SemanticVectorCallback(layers=["net.classifier.3"], dim=4)
    pl.Trainer(callbacks=[semvec], **trainer_kwargs(max_epochs=1, limit_train_batches=3)).fit(
        ImageClassifier(SmallCNN(in_channels=1, num_classes=10)), loader)
    semvec.export_knowledge("teacher.semvec.safetensors")
    assert StaticKnowledge.load("teacher.semvec.safetensors").class_names is None

    block = code_blocks(ROOT / "README.md", "python")[1]
    assert "StaticDistillationModule" in block
    namespace = {"pl": pl, "SmallCNN": SmallCNN, "datamodule": datamodule}
    exec(compile(block, "<README.md python block 2>", "exec"), namespace)
    assert namespace["student"].num_classes == 10
    assert namespace["student"].trainer.current_epoch == 3


def test_knowledge_of_another_number_of_classes_fails_at_construction_naming_both_sides() -> None:
    two_class = StaticKnowledge.from_vectors({"logits": torch.eye(2)}, class_names=["cat", "dog"])
    ten_way = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 10))
    with pytest.raises(SemvecValueError, match=r"^The knowledge is of a 2-class teacher \['cat', 'dog'\] but the "
                                               r"student's last layer \(Sequential\) gives 10 outputs: [^\n]+$"):
        StaticDistillationModule(ten_way, two_class, {})
    # class statistics alone say it too; a student of the right width is fine
    stats = StaticKnowledge.from_vectors({"logits": torch.eye(3)},
                                         statistics={"logits": {"class_means": torch.eye(3)}})
    with pytest.raises(SemvecValueError, match="3-class teacher but the student's last layer"):
        StaticDistillationModule(ten_way, stats, {})
    assert StaticDistillationModule(student(), stats, {}).num_classes == 3
