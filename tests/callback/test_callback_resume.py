"""A run that crashes mid-epoch and resumes from a mid-epoch checkpoint equals an uninterrupted one."""

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from tiny_models import WideLinearNet, make_data, trainer_kwargs
from torch.utils.data import DataLoader

from lightning_semvec import SemanticVectorCallback

STEPS_PER_EPOCH = 6  # 96 samples, 16 per batch
CHECKPOINT_EVERY = 4  # checkpoints at steps 4 and 8 (mid-epoch: 4 and 2 batches into epochs 0 and 1)
CRASH_AT = 10  # the crash comes after the step-8 checkpoint (kept: save_top_k=1 keeps the last)


class CrashingNet(WideLinearNet):
    """Trains on batch ``batch_idx`` of the data whatever the loader yields, and can crash.

    A plain ``DataLoader`` is not resumable: after a mid-epoch restart it starts the epoch over
    while Lightning counts on from the saved batch index. Taking the batch from ``batch_idx``
    (which Lightning restores) gives the resumed run the batches the uninterrupted run saw.
    """

    def __init__(self, crash_at=None):
        super().__init__(width=300)
        self.crash_at = crash_at
        self.data = make_data(STEPS_PER_EPOCH * self.batch_size)

    def train_dataloader(self):
        return DataLoader(range(STEPS_PER_EPOCH), batch_size=1)

    def training_step(self, batch, batch_idx):
        if self.global_step == self.crash_at:
            raise RuntimeError("CRASH")
        rows = slice(batch_idx * self.batch_size, (batch_idx + 1) * self.batch_size)
        return super().training_step(self.data[rows], batch_idx)


def semvec():
    # A wide layer (300 neurons, subsets of 100: the subset of a step must survive the resume),
    # a narrow one, Adam (its moments must survive too) and updates every 3rd step (9, 12, ...
    # after the step-8 checkpoint).
    return SemanticVectorCallback(layers=["wide", "head"], dim=3, every_n_steps=3,
                                  max_neurons_per_step=100)


def fit(model, callback, tmp_path, ckpt_path=None, **overrides):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_train_steps=CHECKPOINT_EVERY)
    trainer = pl.Trainer(
        callbacks=[callback, checkpoint],
        **trainer_kwargs(max_epochs=3, enable_checkpointing=True, default_root_dir=tmp_path,
                         **overrides),
    )
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer


@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch")
def test_resume_after_a_crash_mid_epoch_matches_the_uninterrupted_run(tmp_path: Path):
    pl.seed_everything(0, verbose=False)
    full_model, full = CrashingNet(), semvec()
    fit(full_model, full, tmp_path / "full")

    pl.seed_everything(0, verbose=False)
    crashed = semvec()
    with pytest.raises(RuntimeError, match="CRASH"):
        fit(CrashingNet(crash_at=CRASH_AT), crashed, tmp_path / "crash")
    (ckpt_path,) = (tmp_path / "crash" / "ckpts").glob("*.ckpt")
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert ckpt["global_step"] == 8 and ckpt["global_step"] % STEPS_PER_EPOCH != 0  # mid-epoch

    pl.seed_everything(1, verbose=False)  # the resume must not depend on the global RNG
    resumed_model, resumed = CrashingNet(), semvec()
    trainer = fit(resumed_model, resumed, tmp_path / "resumed", ckpt_path=ckpt_path)

    assert trainer.global_step == 3 * STEPS_PER_EPOCH
    assert resumed.training_steps == full.training_steps == 18
    assert resumed.skipped_steps() == full.skipped_steps() == {"wide": 0, "head": 0}
    # Bit-identical: the same CPU operations on the same numbers, in the same order.
    for name, expected in full.semantic_vectors.items():
        assert torch.equal(resumed.semantic_vectors[name], expected), name
    for (name, expected), actual in zip(full_model.state_dict().items(),
                                        resumed_model.state_dict().values()):
        assert torch.equal(actual, expected), name
