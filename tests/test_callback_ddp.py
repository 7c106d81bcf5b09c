"""Under DDP every process holds the same vectors, equal to a one-process run on the global batch."""

import lightning.pytorch as pl
import torch

from lightning_semvec import SemanticVectorCallback
from tiny_models import TinyConvNet, trainer_kwargs


class SaveVectors(pl.Callback):
    """Writes each process's vectors to disk (ddp_spawn returns no callback state)."""

    def __init__(self, semvec, directory):
        self.semvec, self.directory = semvec, directory

    def on_fit_end(self, trainer, pl_module):
        torch.save(self.semvec.semantic_vectors, self.directory / f"rank{trainer.global_rank}.pt")


def test_ddp_two_processes_match_one_process_on_the_global_batch(tmp_path):
    layers = ["features.*", "classifier.2"]
    pl.seed_everything(0, verbose=False)
    single = SemanticVectorCallback(layers=layers, dim=3)
    pl.Trainer(callbacks=[single], **trainer_kwargs(max_epochs=2)).fit(TinyConvNet(batch_size=16))

    pl.seed_everything(0, verbose=False)
    semvec = SemanticVectorCallback(layers=layers, dim=3)
    trainer = pl.Trainer(
        callbacks=[semvec, SaveVectors(semvec, tmp_path)],
        **trainer_kwargs(max_epochs=2, devices=2, strategy="ddp_spawn", use_distributed_sampler=False),
    )
    trainer.fit(TinyConvNet(batch_size=8))  # 2 x 8 = the one-process batch of 16

    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for name, expected in single.semantic_vectors.items():
        assert torch.equal(rank0[name], rank1[name]), name
        torch.testing.assert_close(rank0[name], expected, rtol=1e-5, atol=1e-5)


def test_ddp_uneven_last_batch_is_padded_not_dropped(tmp_path):
    # 90 samples over 2 processes at 8 per batch: the last batches hold 5 and 5 (sampler pads).
    pl.seed_everything(0, verbose=False)
    semvec = SemanticVectorCallback(layers="classifier.2", dim=2, reduction="positions")
    trainer = pl.Trainer(
        callbacks=[semvec, SaveVectors(semvec, tmp_path)],
        **trainer_kwargs(max_epochs=1, devices=2, strategy="ddp_spawn", use_distributed_sampler=False),
    )
    trainer.fit(TinyConvNet(batch_size=8, n=90))
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(rank0["classifier.2"], rank1["classifier.2"])
    assert torch.isfinite(rank0["classifier.2"]).all()
