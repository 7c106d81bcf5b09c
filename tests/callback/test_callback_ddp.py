"""Under DDP every process holds the same vectors, equal to a one-process run on the global batch."""

import lightning.pytorch as pl
import torch
from tiny_models import TinyConvNet, make_data, trainer_kwargs
from torch.utils.data import DataLoader

from lightning_semvec import SemanticVectorCallback


class SaveVectors(pl.Callback):
    """Writes each process's vectors to disk (ddp_spawn returns no callback state)."""

    def __init__(self, semvec, directory):
        self.semvec, self.directory = semvec, directory

    def on_fit_end(self, trainer, pl_module):
        torch.save(self.semvec.semantic_vectors, self.directory / f"rank{trainer.global_rank}.pt")


def fit_ddp(layers, directory):
    pl.seed_everything(0, verbose=False)
    semvec = SemanticVectorCallback(layers=layers, dim=3)
    directory.mkdir()
    trainer = pl.Trainer(
        callbacks=[semvec, SaveVectors(semvec, directory)],
        **trainer_kwargs(max_epochs=2, devices=2, strategy="ddp_spawn", use_distributed_sampler=False),
    )
    trainer.fit(TinyConvNet(batch_size=8))  # 2 x 8 = the one-process batch of 16
    return torch.load(directory / "rank0.pt"), torch.load(directory / "rank1.pt")


def test_ddp_two_processes_match_one_process_on_the_global_batch(tmp_path):
    layers = ["features.*", "classifier.2"]
    pl.seed_everything(0, verbose=False)
    single = SemanticVectorCallback(layers=layers, dim=3)
    pl.Trainer(callbacks=[single], **trainer_kwargs(max_epochs=2)).fit(TinyConvNet(batch_size=16))

    rank0, rank1 = fit_ddp(layers, tmp_path / "synchronous")
    for name, expected in single.semantic_vectors.items():
        assert torch.equal(rank0[name], rank1[name]), name
        torch.testing.assert_close(rank0[name], expected, rtol=1e-5, atol=1e-5)


# Rows per process on each step: (rank 0, rank 1). Unequal counts make the gather pad the shorter
# side with 0-weight rows (both ways round, and once with a single row on rank 0).
UNEVEN_PLAN = [(8, 5), (5, 8), (8, 8), (1, 6)]


class UnevenBatches(TinyConvNet):
    """Each process reads its own rows of every step; one process reads their union.

    The union is rank 0's rows then rank 1's, the order of the gathered global batch. The
    model does not train (lr=0): a DDP step averages per-process mean losses, which differs from
    the mean over the union, and the test is about the vectors, not the model.
    """

    def __init__(self):
        super().__init__(lr=0.0, n=sum(map(sum, UNEVEN_PLAN)))

    def train_dataloader(self):
        rank, world = self.trainer.global_rank, self.trainer.world_size
        batches, start = [], 0
        for sizes in UNEVEN_PLAN:
            first = start if world == 1 else start + sum(sizes[:rank])
            count = sum(sizes) if world == 1 else sizes[rank]
            batches.append(list(range(first, first + count)))
            start += sum(sizes)
        return DataLoader(make_data(self.n), batch_sampler=batches)


class SaveVectorsAndSkips(SaveVectors):
    def on_fit_end(self, trainer, pl_module):
        state = {"vectors": self.semvec.semantic_vectors, "skipped": self.semvec.skipped_steps()}
        torch.save(state, self.directory / f"rank{trainer.global_rank}.pt")


def test_ddp_uneven_batches_are_padded_with_zero_weight_rows(tmp_path):
    """Two processes with different row counts per step equal one process on their union."""
    def semvec():
        return SemanticVectorCallback(
            layers=["features.1", "classifier.2"], dim=3,
            layer_options={"features.1": {"reduction": "positions"}},  # 36 rows per sample
        )

    pl.seed_everything(0, verbose=False)
    single = semvec()
    pl.Trainer(callbacks=[single], **trainer_kwargs(max_epochs=1)).fit(UnevenBatches())

    pl.seed_everything(0, verbose=False)
    ddp = semvec()
    trainer = pl.Trainer(
        callbacks=[ddp, SaveVectorsAndSkips(ddp, tmp_path)],
        **trainer_kwargs(max_epochs=1, devices=2, strategy="ddp_spawn", use_distributed_sampler=False),
    )
    trainer.fit(UnevenBatches())
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert rank0["skipped"] == rank1["skipped"] == single.skipped_steps() == {
        "features.1": 0, "classifier.2": 0
    }
    for name, expected in single.semantic_vectors.items():
        assert torch.equal(rank0["vectors"][name], rank1["vectors"][name]), name
        torch.testing.assert_close(rank0["vectors"][name], expected, rtol=1e-5, atol=1e-5)
