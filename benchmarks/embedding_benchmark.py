"""Post-hoc vectors (``embed_neurons``): fidelity against training steps, and wide-layer cost.

    python benchmarks/embedding_benchmark.py            # full run (several minutes on 2 cores)
    python benchmarks/embedding_benchmark.py --quick    # smoke run (fewer steps and widths)

1. **Fidelity against steps** on the embedded digits: ``ImageClassifier("small_cnn_teacher")``
   trained with ``SemanticVectorCallback`` (d = 16) once, with snapshots of the network and
   the vectors after each of ``--steps``. For every snapshot and layer, held-out Spearman
   fidelity (validation + test splits, 540 images) of

   - *online*: the callback's vectors as training left them;
   - *finished*: those vectors finished as the callback finishes them at the end of ``fit``
     (``finished_vectors``: the better of L-BFGS from them and from the eigen start, turned to
     face them), on the activation similarity of the snapshot's network over the training
     data (the callback uses its last validation pass);
   - *post hoc*: ``embed_neurons`` on the training data (eigen start, then the same refinement);
   - *optimum*: the rank-16 optimum of the held-out similarity itself (``fidelity_upper_bound``),
     which no vectors fitted on other data can be expected to reach.

2. **Wide layers**: a synthetic low-rank stream (``ReLU(Linear(16, N))`` of Gaussian inputs,
   2,048 samples in batches of 256), every layer sketched (two passes), d = 16. Per width: the
   wall time of ``embed_neurons``, the peak resident memory it adds over the same passes
   through the model without it (``VmHWM``, reset before each), and the in-sample fidelity it
   reports (a random subset of 1,024 neurons). A first run at N = 256 is not reported: it pays
   the one-time costs (lazy imports, the allocator's first arenas).

3. **Split-half control** (``--split-half``, alone): how far the held-out optimum is a
   reachable reference. The held-out set (540 images) is split into two random halves A and B
   (5 splits); per layer, the rank-16 optimum of B's own similarity, against vectors fitted
   on other data and scored on B: the optimum of A, the post-hoc vectors of the training data
   (1,257 images), and those of the training data plus A. What no vectors fitted elsewhere
   reach is B's own sampling noise, which the optimum of B fits.

Prints Markdown tables; ``--output`` also writes them to a file.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_semvec import SemanticVectorCallback, embed_neurons
from lightning_semvec.data import DigitsDataModule
from lightning_semvec.functional import fidelity_upper_bound, semantic_fidelity
from lightning_semvec.functional.finishing import finished_vectors
from lightning_semvec.metrics import ActivationSimilarity
from lightning_semvec.models import ImageClassifier

LAYERS = ["net.features.2", "net.classifier.0", "net.classifier.2"]
DIM = 16
QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
             enable_model_summary=False, accelerator="cpu", devices=1)


class Snapshots(pl.Callback):
    """Copies of the network's weights and the callback's vectors after the given steps."""

    def __init__(self, semvec: SemanticVectorCallback, steps: list[int]) -> None:
        self.semvec, self.steps, self.taken = semvec, set(steps), {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step in self.steps and trainer.global_step not in self.taken:
            self.taken[trainer.global_step] = (copy.deepcopy(pl_module.state_dict()),
                                               self.semvec.semantic_vectors)


def similarity_of(model: nn.Module, layer: str, images: torch.Tensor):
    """The exact activation similarity of one layer over ``images`` (mean over positions)."""
    outputs = []
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda m, i, o: outputs.append(o.mean(dim=(2, 3)) if o.ndim == 4 else o))
    model.eval()
    with torch.no_grad():
        for batch in images.split(512):
            model(batch)
    handle.remove()
    acts = torch.cat(outputs)
    metric = ActivationSimilarity(acts.shape[1], max_neurons=acts.shape[1])
    metric.update(acts)
    return metric.compute()


def fidelity_against_steps(steps: list[int]) -> str:
    pl.seed_everything(0, verbose=False)
    data = DigitsDataModule(batch_size=64)
    data.setup()
    semvec = SemanticVectorCallback(LAYERS, dim=DIM, analysis=None)
    snapshots = Snapshots(semvec, steps)
    model = ImageClassifier("small_cnn_teacher")
    pl.Trainer(max_steps=max(steps), callbacks=[semvec, snapshots], **QUIET).fit(model, data)
    train_images = data.train_dataset.tensors[0]
    held_out = torch.cat([data.val_dataset.tensors[0], data.test_dataset.tensors[0]])
    rows = ["| steps | layer | N | online | finished | post hoc | optimum (held out) |",
            "|---|---|---|---|---|---|---|"]
    for step in sorted(snapshots.taken):
        weights, online = snapshots.taken[step]
        network = ImageClassifier("small_cnn_teacher")
        network.load_state_dict(weights)
        posthoc = embed_neurons(network, DataLoader(data.train_dataset, batch_size=256), LAYERS,
                                dim=DIM, trainer=QUIET)
        for layer in LAYERS:
            s_train, alive_train = similarity_of(network, layer, train_images)
            finished = finished_vectors(online[layer], s_train, alive_train)
            s_held, alive_held = similarity_of(network, layer, held_out)
            scores = [semantic_fidelity(s_held, alive_held, v)["spearman"].item()
                      for v in (online[layer], finished, posthoc[layer].vectors)]
            best = fidelity_upper_bound(s_held, alive_held, DIM).item()
            rows.append(f"| {step} | `{layer}` | {s_held.shape[0]} | "
                        + " | ".join(f"{v:.4f}" for v in (*scores, best)) + " |")
            print(rows[-1], flush=True)
    return "\n".join(rows)


def split_half_control(steps: int = 640, splits: int = 5) -> str:
    """Section 3: medians over ``splits`` random halves of the held-out set."""
    from lightning_semvec.functional.optimal_embedding import optimal_vectors

    pl.seed_everything(0, verbose=False)
    data = DigitsDataModule(batch_size=64)
    data.setup()
    model = ImageClassifier("small_cnn_teacher")
    pl.Trainer(max_steps=steps, **QUIET).fit(model, data)
    train = data.train_dataset.tensors[0]
    held_out = torch.cat([data.val_dataset.tensors[0], data.test_dataset.tensors[0]])
    half = held_out.shape[0] // 2
    rows = ["| layer | optimum of B | A's optimum on B | training data's on B | training + A's on B |",
            "|---|---|---|---|---|"]
    for layer in LAYERS:
        s_train, alive_train = similarity_of(model, layer, train)
        posthoc = optimal_vectors(s_train, alive_train, DIM)
        scores: list[list[float]] = [[], [], [], []]
        for split in range(splits):
            order = torch.randperm(held_out.shape[0], generator=torch.Generator().manual_seed(split))
            a, b = held_out[order[:half]], held_out[order[half:]]
            s_a, alive_a = similarity_of(model, layer, a)
            s_b, alive_b = similarity_of(model, layer, b)
            s_more, alive_more = similarity_of(model, layer, torch.cat([train, a]))
            scores[0].append(fidelity_upper_bound(s_b, alive_b, DIM).item())
            for i, vectors in enumerate((optimal_vectors(s_a, alive_a, DIM), posthoc,
                                         optimal_vectors(s_more, alive_more, DIM)), start=1):
                scores[i].append(semantic_fidelity(s_b, alive_b, vectors)["spearman"].item())
        best, *others = (statistics.median(values) for values in scores)
        rows.append(f"| `{layer}` | {best:.4f} | "
                    + " | ".join(f"{v:.4f} (gap {best - v:.4f})" for v in others) + " |")
        print(rows[-1], flush=True)
    return "\n".join(rows)


def _peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def wide_layers(widths: list[int], samples: int = 2048) -> str:
    rows = ["| N | time (s) | time / N (µs) | memory added (MiB) | in-sample fidelity |",
            "|---|---|---|---|---|"]
    for index, width in enumerate([256, *widths]):  # a first, unreported run warms up
        g = torch.Generator().manual_seed(0)
        inputs = torch.randn(samples, 16, generator=g)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, width), nn.ReLU())
        loader = DataLoader(TensorDataset(inputs), batch_size=256)
        _reset_peak()
        with torch.no_grad():
            for _ in range(2):  # the same two passes through the model, without embedding
                for (x,) in loader:
                    model(x)
        baseline = _peak_kib()
        _reset_peak()
        start = time.perf_counter()
        knowledge = embed_neurons(model, loader, ["1"], dim=DIM, exact_max_neurons=3,
                                  trainer=QUIET)
        seconds = time.perf_counter() - start
        added = max(0, _peak_kib() - baseline) / 1024
        fidelity = float(knowledge.extra["fidelity/1"])
        if index == 0:
            continue
        rows.append(f"| {width:,} | {seconds:.1f} | {1e6 * seconds / width:.0f} | {added:.0f} | "
                    f"{fidelity:.4f} |")
        print(rows[-1], flush=True)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and widths")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    parser.add_argument("--split-half", action="store_true",
                        help="only the split-half control of the held-out optimum (section 3)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.split_half:
        text = ("Command: `python benchmarks/embedding_benchmark.py --split-half`\n\n"
                + split_half_control() + "\n")
        print(text)
        if args.output is not None:
            args.output.write_text(text, encoding="utf-8")
        return 0
    steps = [20, 40] if args.quick else [40, 160, 640]
    widths = [1024, 4096] if args.quick else [4096, 16384, 65536]
    command = "python benchmarks/embedding_benchmark.py" + (" --quick" if args.quick else "")
    header = (f"Command: `{command}` ({platform.machine()}, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}).")
    fidelity = fidelity_against_steps(steps)
    wide = wide_layers(widths)
    text = (f"{header}\n\nHeld-out fidelity (Spearman) against training steps, d = {DIM}:\n\n"
            f"{fidelity}\n\nWide layers (sketched, two passes, d = {DIM}):\n\n{wide}\n")
    print(text)
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
