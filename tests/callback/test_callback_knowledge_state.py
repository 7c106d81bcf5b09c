"""The callback's checkpoint state is the knowledge document: export by marker, statistics,
class names per fit, old checkpoints, and the analysis option through LightningCLI."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from tiny_models import TinyConvNet, trainer_kwargs

from lightning_semvec import AnalysisOptions, SemanticVectorCallback, StaticKnowledge
from lightning_semvec.callback.checkpoint import knowledge_from_checkpoint
from lightning_semvec.cli._main import main
from lightning_semvec.knowledge import KNOWLEDGE_MARKER

NO_FILES = AnalysisOptions(projector=False, figures=False)


def fit(callbacks, datamodule=None, **overrides):
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(callbacks=list(callbacks), **trainer_kwargs(**overrides))
    trainer.fit(TinyConvNet(), datamodule=datamodule)
    return trainer


class RenamedCallback(SemanticVectorCallback):
    """A user's subclass: its state key starts with another class name."""


def test_a_subclass_checkpoint_exports_by_the_marker(tmp_path):
    # Unfinished: the checkpoint is written before the end of fit, where vectors are finished.
    semvec = RenamedCallback(layers="classifier.2", dim=2, analysis=AnalysisOptions(
        projector=False, figures=False, finish_vectors=False))
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="last")
    fit([semvec, ckpt], max_epochs=1, enable_checkpointing=True, limit_val_batches=None)
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"]
    (key,) = [k for k in state if k.startswith("RenamedCallback")]
    assert state[key]["knowledge"]["format"] == KNOWLEDGE_MARKER
    exported = knowledge_from_checkpoint(tmp_path / "last.ckpt")
    assert torch.equal(exported.vectors("classifier.2"), semvec.semantic_vectors["classifier.2"])
    # The validation statistics travel in the checkpoint too.
    stats = exported.statistics("classifier.2")
    assert torch.equal(stats["dead"], semvec.neuron_statistics["classifier.2"]["dead"])
    assert exported.extra["state_key"] == key


def test_exported_knowledge_carries_the_last_validation_statistics(tmp_path):
    semvec = SemanticVectorCallback(layers=["features.1", "classifier.2"], dim=2,
                                    analysis=AnalysisOptions(projector=False, figures=False,
                                                             num_classes=3))
    fit([semvec], max_epochs=1, limit_val_batches=None)
    knowledge = StaticKnowledge.load(semvec.export_knowledge(tmp_path / "k.semvec.safetensors"))
    stats = knowledge.statistics("classifier.2")
    assert set(stats) == {"mean_activation", "dead", "class_counts", "class_means",
                          "selectivity", "preferred_class"}
    assert stats["class_counts"].sum() == 32  # the validation set
    for key, value in semvec.neuron_statistics["features.1"].items():
        assert torch.equal(knowledge.statistics("features.1")[key], value), key


class NamedData(pl.LightningDataModule):
    def __init__(self, names):
        super().__init__()
        self.class_names = names

    def train_dataloader(self):
        return TinyConvNet().train_dataloader()


def test_class_names_come_from_each_fit_unless_the_user_gave_them():
    given = SemanticVectorCallback(layers="classifier.2", dim=2,
                                   analysis=AnalysisOptions(class_names=["x", "y", "z"]))
    fit([given], datamodule=NamedData(["a", "b", "c"]), max_epochs=1)
    assert given.class_names == ["x", "y", "z"]
    found = SemanticVectorCallback(layers="classifier.2", dim=2, analysis=None)
    fit([found], datamodule=NamedData(["a", "b", "c"]), max_epochs=1)
    assert found.class_names == ["a", "b", "c"]
    fit([found], datamodule=NamedData(["d", "e", "f"]), max_epochs=2)
    assert found.class_names == ["d", "e", "f"]  # the second fit's data, not the first's
    assert found.to_knowledge().class_names == ["d", "e", "f"]


def test_a_checkpoint_written_by_version_0_1_resumes_and_exports(tmp_path):
    """The state layout of lightning_semvec 0.1: vectors and metadata side by side."""
    source = SemanticVectorCallback(layers="classifier.2", dim=2, analysis=None)
    fit([source], max_epochs=1)
    vectors = source.semantic_vectors
    legacy = {
        "vectors": vectors,
        "optimizer": source.vectors.optimizer.state_dict(),
        "skipped": {"classifier.2": torch.tensor(0)},
        "last_loss": {"classifier.2": torch.tensor(0.5)},
        "last_seen_step": 6,
        "training_steps": 6,
        "dim": 2,
        "knowledge": {"similarity": "pearson",
                      "readouts": {"classifier.2": {"reduction": "mean", "neuron_dim": 1}},
                      "source_model": "tiny_models.TinyConvNet", "class_names": None},
    }
    resumed = SemanticVectorCallback(layers="classifier.2", dim=2, analysis=None)
    resumed.load_state_dict(legacy)
    assert torch.equal(resumed.semantic_vectors["classifier.2"], vectors["classifier.2"])
    assert resumed.to_knowledge().training_steps == 6
    path = tmp_path / "old.ckpt"
    torch.save({"callbacks": {"SemanticVectorCallback{'layers': ['classifier.2'], 'dim': 2}": legacy}},
               path)
    exported = knowledge_from_checkpoint(path)
    assert torch.equal(exported.vectors("classifier.2"), vectors["classifier.2"])
    assert exported.source_model == "tiny_models.TinyConvNet"


def test_a_checkpoint_without_the_callback_says_so(tmp_path):
    torch.save({"callbacks": {"EarlyStopping": {"wait_count": 0}}}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="holds no semantic vector callback state"):
        knowledge_from_checkpoint(tmp_path / "x.ckpt")


def test_lightning_cli_exposes_the_analysis_options(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["fit", "--semvec.analysis.projector_images", "grid",
                 "--semvec.analysis.fidelity_k", "3", "--print_config"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "projector_images: grid" in printed and "fidelity_k: 3" in printed
