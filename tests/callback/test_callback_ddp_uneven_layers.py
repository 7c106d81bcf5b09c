"""Under DDP, layers that run on some processes only, or with other shapes on each, still give
every process the same vectors, equal to one process on the global batch (issue 11, item 6).

Each process reads its own share of every step; the one-process run reads the shares one after
the other (rank 0's, then rank 1's: the order of the gathered global batch). The models do not
train (lr=0): a DDP step averages per-process mean losses, which differs from the mean over the
union, and these tests are about the vectors, not the model.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from tiny_models import trainer_kwargs
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_semvec import SemanticVectorCallback
from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.callback._gather import gather_activations
from lightning_semvec.errors import SemvecValueError

DDP = {"devices": 2, "strategy": "ddp_spawn", "use_distributed_sampler": False}


class SaveState(pl.Callback):
    """Writes each process's vectors and skip counts to disk (ddp_spawn returns no callback
    state)."""

    def __init__(self, semvec: SemanticVectorCallback, directory: Path) -> None:
        self.semvec, self.directory = semvec, directory

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = {"vectors": self.semvec.semantic_vectors, "skipped": self.semvec.skipped_steps()}
        torch.save(state, self.directory / f"rank{trainer.global_rank}.pt")


class ReportingCallback(SemanticVectorCallback):
    """Writes the error a spawned process raises in an update to ``rank<r>.err`` (Lightning
    calls ``on_exception`` in the launching process only)."""

    def __init__(self, directory: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.directory = directory

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        try:
            super().on_train_batch_end(trainer, *args)
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            (self.directory / f"rank{trainer.global_rank}.err").write_text(message)
            # The launcher kills the other processes as soon as one has failed: wait (a
            # bounded time) for every process's report, so one that did raise is seen to.
            deadline = time.monotonic() + 30
            while len(list(self.directory.glob("rank*.err"))) < trainer.world_size:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            raise


class Shares(pl.LightningModule):
    """Steps given as ``[(rank 0's share, rank 1's share), ...]``, each share a tuple of tensors.

    Under two processes each reads its own share of a step; one process reads the list of both.
    ``forward_share`` runs one share; the batch loss is their sum.
    """

    def __init__(self, steps: list[tuple[Any, Any]]) -> None:
        super().__init__()
        self.shares_per_step = steps

    def train_dataloader(self) -> DataLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        batches = [list(both) if world == 1 else [both[rank]] for both in self.shares_per_step]
        return DataLoader(batches, batch_size=None)  # each item is one step's list of shares

    def training_step(self, batch: list[Any], batch_idx: int) -> Tensor:
        return sum(self.forward_share(*share) for share in batch)

    def forward_share(self, *share: Tensor) -> Tensor:
        raise NotImplementedError

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def rows(count: int, seed: int, features: int = 4) -> Tensor:
    return torch.randn(count, features, generator=torch.Generator().manual_seed(seed))


class Routed(Shares):
    """Mixture-of-experts routing: the rows flagged in ``route`` go through ``expert``, so on a
    share with no flagged row ``expert`` does not run at all (``nn.Tanh``: no parameters, so
    DDP has no unused gradients to complain about)."""

    def __init__(self) -> None:
        # (rows, routed rows) of (rank 0, rank 1) per step: rank 0 only, both with other
        # counts, none (skipped everywhere), rank 1 only with rank 0's rows equal to `body`'s,
        # and shares of different sizes.
        plan = [((4, 3), (4, 0)), ((4, 2), (4, 3)), ((4, 0), (4, 0)), ((4, 0), (4, 4)),
                ((3, 3), (5, 2))]
        steps = []
        for i, shares in enumerate(plan):
            steps.append(tuple(
                (rows(count, 10 * i + rank), torch.arange(count) < routed)
                for rank, (count, routed) in enumerate(shares)
            ))
        super().__init__(steps)
        self.body, self.expert, self.head = nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)

    def forward_share(self, x: Tensor, route: Tensor) -> Tensor:
        hidden = torch.relu(self.body(x))
        chosen = route.nonzero().squeeze(1)
        if chosen.numel():  # a data-dependent branch: the expert runs on this share or not
            hidden = hidden.index_copy(0, chosen, self.expert(hidden[chosen]))
        return self.head(hidden).square().mean()


class Sequences(Shares):
    """``embed`` gives ``(B, T, 5)``, read with ``reduction="positions"`` (``B x T`` rows);
    ``head`` gives ``(B, 2)``. Each process has its own ``B`` and ``T``, chosen so that on one
    process ``embed``'s rows equal ``head``'s and on the other they do not."""

    def __init__(self) -> None:
        plan = [((4, 2), (8, 1)), ((3, 5), (3, 2)), ((2, 4), (4, 2))]  # (B, T) of rank 0, 1
        steps = []
        for i, shares in enumerate(plan):
            steps.append(tuple(
                (rows(b * t, 10 * i + rank, features=3).reshape(b, t, 3),)
                for rank, (b, t) in enumerate(shares)
            ))
        super().__init__(steps)
        self.embed, self.head = nn.Linear(3, 5), nn.Linear(5, 2)

    def forward_share(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.embed(x)).mean(dim=1)).square().mean()


class RankWidths(Shares):
    """``probe`` sees 3 features on rank 0 and 4 on rank 1: its neurons are not one set."""

    def __init__(self) -> None:
        super().__init__([((rows(4, 0),), (rows(4, 1),))] * 2)
        self.body, self.probe = nn.Linear(4, 2), nn.Identity()

    def forward_share(self, x: Tensor) -> Tensor:
        self.probe(x[:, : 3 + self.global_rank])
        return self.body(x).square().mean()


def run_both(model_class: type[Shares], tmp_path: Path, **semvec_kwargs: Any):
    """``(one-process callback, rank 0's state, rank 1's state)`` of the same global batches."""
    pl.seed_everything(0, verbose=False)
    single = SemanticVectorCallback(dim=3, **semvec_kwargs)
    pl.Trainer(callbacks=[single], **trainer_kwargs(max_epochs=1)).fit(model_class())

    pl.seed_everything(0, verbose=False)
    ddp = SemanticVectorCallback(dim=3, **semvec_kwargs)
    callbacks = [ddp, SaveState(ddp, tmp_path)]
    pl.Trainer(callbacks=callbacks, **trainer_kwargs(max_epochs=1, **DDP)).fit(model_class())
    return single, torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")


def assert_same_vectors(single: SemanticVectorCallback, rank0: dict, rank1: dict) -> None:
    assert rank0["skipped"] == rank1["skipped"] == single.skipped_steps()
    assert set(rank0["vectors"]) == set(single.semantic_vectors)
    for name, expected in single.semantic_vectors.items():
        assert torch.equal(rank0["vectors"][name], rank1["vectors"][name]), name
        torch.testing.assert_close(rank0["vectors"][name], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.timeout(120)
def test_ddp_layer_that_runs_on_some_processes_only(tmp_path):
    """The expert runs on rank 0 only, on both, on neither, on rank 1 only: the processes agree
    first, a process without it sends zero rows, and the vectors equal one process's."""
    with pytest.warns(UserWarning, match="'expert' was not called"):
        single, rank0, rank1 = run_both(Routed, tmp_path, layers=["body", "expert"])
    assert single.semantic_vectors["expert"].shape == (5, 3)
    assert_same_vectors(single, rank0, rank1)


@pytest.mark.timeout(120)
def test_ddp_sequences_of_other_lengths_per_process(tmp_path):
    """Per-process sequence lengths read with reduction="positions": other row counts on each
    process, and layers that share a row count on one process but not on the other."""
    single, rank0, rank1 = run_both(
        Sequences, tmp_path, layers=["embed", "head"],
        layer_options={"embed": {"reduction": "positions", "neuron_dim": -1}},
    )
    assert_same_vectors(single, rank0, rank1)


@pytest.mark.timeout(120)
def test_ddp_layer_of_other_widths_per_process_is_a_clear_error_on_every_process(tmp_path):
    semvec = ReportingCallback(tmp_path, layers=["body", "probe"], dim=3)
    trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(max_epochs=1, **DDP))
    with pytest.raises(Exception, match="layer 'probe' has a different number of neurons"):
        trainer.fit(RankWidths())
    for rank in (0, 1):  # raised on both: neither was left waiting (and killed) in a collective
        message = (tmp_path / f"rank{rank}.err").read_text()
        assert message.startswith("SemvecValueError: SemanticVectorCallback: layer 'probe'")
        assert "rank 0: 3, rank 1: 4" in message


# ----------------------------------------------------------------- the protocol, without processes
class FakeProcesses:
    """``world`` stand-ins for the processes of a DDP run, one thread each: ``all_gather``
    stacks every process's tensor, and fails (rather than aborting) where their shapes differ."""

    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world, timeout=10)
        self.slots: list[Tensor | None] = [None] * world
        self.calls: list[list[tuple[int, ...]]] = [[] for _ in range(world)]

    def module(self, rank: int) -> Any:
        processes = self

        class Module:
            device, global_rank = torch.device("cpu"), rank

            def all_gather(self, tensor: Tensor) -> Tensor:
                processes.slots[rank] = tensor
                processes.calls[rank].append(tuple(tensor.shape))
                processes.barrier.wait()
                stacked = torch.stack(processes.slots)  # raises on mismatched shapes
                processes.barrier.wait()
                return stacked

        return Module()

    def run(self, shares: list[dict[str, Tensor]], names: list[str]) -> list[Any]:
        """Every process's :func:`gather_activations` result (or the error it raised)."""
        results: list[Any] = [None] * len(shares)

        def process(rank: int) -> None:
            try:
                results[rank] = gather_activations(
                    self.module(rank), len(shares), names, shares[rank],
                    subsets={}, widths={n: a.shape[1] for n, a in shares[rank].items()},
                    neuron_subset=lambda width: None, messages=WarningCache("test"),
                )
            except Exception as error:
                results[rank] = error

        threads = [threading.Thread(target=process, args=(r,)) for r in range(len(shares))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results


def test_processes_agree_then_gather_once_per_group_of_equal_rows():
    a0, a1 = rows(3, 0, features=4), rows(2, 1, features=4)
    b0, c1 = rows(3, 2, features=5), rows(2, 3, features=6)
    processes = FakeProcesses(2)
    # "a" runs on both (3 and 2 rows), "b" on rank 0 only with a's rows there, "c" on rank 1
    # only with a's rows there, "d" nowhere: local shapes would group them differently.
    out0, out1 = processes.run([{"a": a0, "b": b0}, {"a": a1, "c": c1}], ["a", "b", "c", "d"])
    assert processes.calls[0] == processes.calls[1] == [(4, 4), (3, 4), (3, 5), (2, 6)]
    for out in (out0, out1):
        assert out.not_called == ["d"]
        torch.testing.assert_close(out.activations["a"], torch.cat([a0, a1, torch.zeros(1, 4)]))
        torch.testing.assert_close(out.weights["a"], torch.tensor([1.0, 1, 1, 1, 1, 0]))
        torch.testing.assert_close(out.activations["b"], torch.cat([b0, torch.zeros(3, 5)]))
        torch.testing.assert_close(out.weights["b"], torch.tensor([1.0, 1, 1, 0, 0, 0]))
        torch.testing.assert_close(out.activations["c"], torch.cat([torch.zeros(2, 6), c1]))
        torch.testing.assert_close(out.weights["c"], torch.tensor([0.0, 0, 1, 1]))
        assert out.widths == {"a": 4, "b": 5, "c": 6}


def test_other_widths_per_process_raise_on_every_process():
    results = FakeProcesses(2).run([{"a": rows(3, 0, 4)}, {"a": rows(3, 1, 5)}], ["a"])
    for error in results:
        assert isinstance(error, SemvecValueError)
        assert "layer 'a' has a different number of neurons" in str(error)
        assert "rank 0: 4, rank 1: 5" in str(error)


def test_one_process_gathers_nothing():
    class NoCollectives:
        device, global_rank = torch.device("cpu"), 0

        def all_gather(self, tensor: Tensor) -> Tensor:
            raise AssertionError("one process must not call a collective")

    acts = {"a": rows(3, 0), "b": rows(1, 1)}
    messages = WarningCache("test")
    out = gather_activations(
        NoCollectives(), 1, ["a", "b", "c"], acts, subsets={}, widths={"a": 4, "b": 4},
        neuron_subset=lambda width: None, messages=messages,
    )
    assert out.activations["a"] is acts["a"] and out.weights == {"a": None}
    assert out.not_called == ["c"] and messages.said == {"small:b"}
