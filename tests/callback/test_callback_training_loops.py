"""The callback on the training loops people use: manual optimization with several steps per
batch, one callback across two Trainers, a frozen backbone in eval mode, and resuming with
other settings (dim, layers, layers given as modules, another optimizer)."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from tiny_models import TinyConvNet, trainer_kwargs

from lightning_semvec import SemanticVectorCallback


def fit(callbacks, model=None, ckpt_path=None, **overrides):
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(callbacks=list(callbacks), **trainer_kwargs(**overrides))
    trainer.fit(model or TinyConvNet(), ckpt_path=ckpt_path)
    return trainer


def record_updates(semvec, monkeypatch):
    steps = []
    original = semvec._update
    monkeypatch.setattr(semvec, "_update", lambda t, *rest: (steps.append(t.global_step),
                                                             original(t, *rest)))
    return steps


class TwoStepsPerBatch(TinyConvNet):
    """Manual optimization: one optimizer stepped twice on every batch."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        for _ in range(2):
            loss = super().training_step(batch, batch_idx)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()


def test_manual_optimization_with_several_steps_per_batch_learns(monkeypatch, recwarn):
    semvec = SemanticVectorCallback(layers="classifier.2", dim=2, every_n_steps=2, analysis=None)
    steps = record_updates(semvec, monkeypatch)
    trainer = fit([semvec], model=TwoStepsPerBatch(), max_epochs=1)
    assert trainer.global_step == 12  # 6 batches, 2 steps each
    # The first batch shows how many steps a batch takes; every later one reaches a multiple.
    assert steps == [4, 6, 8, 10, 12]
    assert semvec.semantic_vectors["classifier.2"].shape == (3, 2)
    assert not [w for w in recwarn if "was not called" in str(w.message)]


def test_one_callback_used_by_two_trainers_starts_each_fit_afresh(monkeypatch):
    semvec = SemanticVectorCallback(layers="classifier.2", dim=2, analysis=None)
    steps = record_updates(semvec, monkeypatch)
    fit([semvec], max_epochs=1, accumulate_grad_batches=3)
    first = list(steps)
    steps.clear()
    fit([semvec], max_epochs=1, accumulate_grad_batches=3)
    assert first == [1, 2] and steps == first  # no spurious update at step 0, none missed


class FrozenBackbone(TinyConvNet):
    """Fine-tuning with the feature extractor frozen and kept in eval mode during fit."""

    def on_train_epoch_start(self):
        self.features.eval()
        self.features.requires_grad_(False)


def test_a_frozen_backbone_in_eval_mode_is_learned_from(recwarn):
    semvec = SemanticVectorCallback(layers=["features.1", "classifier.2"], dim=2, analysis=None)
    fit([semvec], model=FrozenBackbone(), max_epochs=1)
    assert set(semvec.semantic_vectors) == {"features.1", "classifier.2"}
    assert semvec.skipped_steps() == {"features.1": 0, "classifier.2": 0}
    assert not [w for w in recwarn if "was not called" in str(w.message)]


def checkpoint_of(callbacks, tmp_path, **overrides):
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="last")
    fit([*callbacks, ckpt], max_epochs=1, enable_checkpointing=True, **overrides)
    return tmp_path / "last.ckpt"


def test_resume_with_another_dim_says_the_vectors_start_fresh(tmp_path):
    path = checkpoint_of([SemanticVectorCallback(layers="classifier.2", dim=2, analysis=None)],
                         tmp_path)
    other = SemanticVectorCallback(layers="classifier.2", dim=3, analysis=None)
    with pytest.warns(UserWarning, match=r"dim=2; this callback has layers \['classifier.2'\] "
                                         r"with dim=3. No vectors were resumed: all start fresh"):
        fit([other], ckpt_path=path, max_epochs=1)
    assert other.vectors.layer_names == []  # nothing resumed; no step ran after the resume


def test_resume_with_other_layers_keeps_the_shared_ones(tmp_path):
    source = SemanticVectorCallback(layers=["features.1", "classifier.2"], dim=2, analysis=None)
    path = checkpoint_of([source], tmp_path)
    other = SemanticVectorCallback(layers=["classifier.2", "features.3"], dim=2, analysis=None)
    with pytest.warns(UserWarning, match=r"Resumed the vectors of \['classifier.2'\].*start "
                                         r"fresh: \['features.3'\]"):
        fit([other], ckpt_path=path, max_epochs=1)
    assert torch.equal(other.semantic_vectors["classifier.2"],
                       source.semantic_vectors["classifier.2"])
    assert "features.3" not in other.vectors


def test_layers_given_as_modules_keep_their_own_state(tmp_path):
    model = TinyConvNet()
    first = SemanticVectorCallback(layers=model.features[0], dim=2, analysis=None)
    second = SemanticVectorCallback(layers=model.features[2], dim=2, analysis=None)
    path = checkpoint_of([first, second], tmp_path, model=model)
    assert first.state_key != second.state_key
    resumed_model = TinyConvNet()
    again = [SemanticVectorCallback(layers=resumed_model.features[i], dim=2, analysis=None)
             for i in (0, 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "not resumed" message
        warnings.filterwarnings("ignore", message=".*(val_dataloader|LeafSpec|many workers|ckpt_path).*")
        fit(again, model=resumed_model, ckpt_path=path, max_epochs=1)
    assert torch.equal(again[0].semantic_vectors["features.0"], first.semantic_vectors["features.0"])
    assert torch.equal(again[1].semantic_vectors["features.2"], second.semantic_vectors["features.2"])


def test_resume_with_another_optimizer_restores_the_vectors_and_starts_it_fresh(tmp_path):
    path = checkpoint_of([SemanticVectorCallback(layers="classifier.2", dim=2, analysis=None)],
                         tmp_path)
    sgd = SemanticVectorCallback(layers="classifier.2", dim=2, optimizer="sgd", analysis=None)
    with pytest.warns(UserWarning, match="optimizer state is of Adam, this optimizer is SGD"):
        fit([sgd], ckpt_path=path, max_epochs=2)
    assert torch.isfinite(sgd.semantic_vectors["classifier.2"]).all()
