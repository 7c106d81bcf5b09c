"""Do the semantic vectors explain what the network does? Held-out agreement on the glyphs.

The glyph benchmark's teacher (``distillation_benchmark.py --data glyphs``: ``PooledCNN(width=32,
hidden=64)``, its knowledge file exported after training, vectors learned on the training
fonts) is run on the 1,860 test images of the 6 fonts it never saw. Two questions:

1. **Logits.** Do the logit neurons' vectors say which characters the teacher confuses? The
   semantic similarity of each pair of logit neurons is held against the symmetrised rate at
   which the teacher takes one character for the other on the test fonts
   (:func:`~lightning_semvec.functional.agreement.symmetric_confusion`): Spearman's rank
   correlation over the 1,891 pairs, and how many of the 15 most similar pairs are among the 15
   most confused (chance: 0.12).
2. **Penultimate layer.** Do its neurons' vectors say which neurons respond to the same
   characters? The semantic similarity is held against the correlation of the alive neurons'
   class profiles (mean activation per character) measured on the test fonts.

Beside each figure: the same measure for the untrained teacher's vectors (the same
architecture and export path, learning rate 0), for the activation correlation on the test
images themselves (what the vectors approximate, with the data in hand), and the chance level:
the trained vectors with their neurons permuted (``--permutations`` times; mean, 95th
percentile and the one-sided p-value of the observed figure). No interval over the test images:
a bootstrap resample sees fewer distinct mistakes, so the rank correlation with the confusion
falls with every resample (200 of 200 below the full set's in our check) and its interval would
mislead; and one teacher was trained, so the figures do not cover the teacher's training seed.

Run (reuses the teacher and knowledge files of ``--workdir``; trains them there if missing)::

    python benchmarks/explanation_benchmark.py --workdir /work/bench/glyphs \
        --output docs/results.md --section explanation
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_confusion_matrix

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distillation_benchmark import make_data, parse_args, teachers_of, write_section
from distillation_methods import TEACHER_LOGITS, TEACHER_PENULTIMATE

from lightning_semvec import StaticKnowledge
from lightning_semvec.data import GlyphsDataModule
from lightning_semvec.functional import (
    activation_similarity,
    similarity_agreement,
    symmetric_confusion,
)
from lightning_semvec.functional.agreement import class_profile_similarity
from lightning_semvec.metrics import NeuronActivationStatistics

TOP = 15


@torch.no_grad()
def test_pass(net: nn.Module, data: GlyphsDataModule) -> tuple[Tensor, Tensor, Tensor]:
    """``(logits (S, C), penultimate (S, H), labels (S,))`` of the test images."""
    captured: list[Tensor] = []
    layer = net.get_submodule(TEACHER_PENULTIMATE.removeprefix("net."))
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    logits, labels = [], []
    try:
        for images, targets in data.test_dataloader():
            logits.append(net(images))
            labels.append(targets)
    finally:
        handle.remove()
    return torch.cat(logits), torch.cat(captured), torch.cat(labels)


def measures(similarity: Tensor, reference: Tensor, keep: Tensor | None) -> tuple[float, float]:
    result = similarity_agreement(similarity, reference, top_k=TOP, keep=keep)
    return result.spearman, result.top_overlap * TOP


def references(logits: Tensor, penultimate: Tensor, labels: Tensor, classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """The teacher's symmetrised confusion, the penultimate layer's class-profile similarity and
    its alive neurons (those that vary on the test images)."""
    confusion = symmetric_confusion(multiclass_confusion_matrix(logits.argmax(dim=1), labels, classes))
    statistics = NeuronActivationStatistics(num_neurons=penultimate.shape[1], num_classes=classes)
    statistics.update(penultimate, labels)
    stats = statistics.compute()
    return confusion, class_profile_similarity(stats["class_means"]), ~stats["dead"]


def run(workdir: Path, permutations: int, quick: bool) -> tuple[str, dict[str, object]]:
    start = time.perf_counter()
    argv = ["--data", "glyphs", *(["--quick"] if quick else [])]
    config, _ = parse_args(argv)
    torch.set_num_threads(config.threads)
    net, accuracy, _ = teachers_of(config, workdir)
    data = make_data(config)
    data.setup("test")
    assert isinstance(data, GlyphsDataModule)
    classes = data.num_classes
    logits, penultimate, labels = test_pass(net.eval(), data)
    confusion, profiles, alive = references(logits, penultimate, labels, classes)
    trained = StaticKnowledge.load(workdir / "teacher.semvec.safetensors")
    untrained = StaticKnowledge.load(workdir / "untrained.semvec.safetensors")
    rows: dict[str, tuple[Tensor, Tensor | None, str]] = {}
    for layer, which, keep in ((TEACHER_LOGITS, "logits", None), (TEACHER_PENULTIMATE, "penultimate", alive)):
        rows[f"trained teacher's vectors ({which})"] = (trained.semantic_similarity(layer), keep, which)
        rows[f"untrained teacher's vectors ({which})"] = (untrained.semantic_similarity(layer), keep, which)
        acts = logits if which == "logits" else penultimate
        rows[f"activation correlation on the test images ({which})"] = (activation_similarity(acts.double()), keep, which)
    point = {name: measures(sim, confusion if which == "logits" else profiles, keep)
             for name, (sim, keep, which) in rows.items()}
    generator = torch.Generator().manual_seed(0)
    permuted: dict[str, list[tuple[float, float]]] = {"logits": [], "penultimate": []}
    for _ in range(permutations):
        for layer, which, keep, reference in ((TEACHER_LOGITS, "logits", None, confusion),
                                              (TEACHER_PENULTIMATE, "penultimate", alive, profiles)):
            sim = trained.semantic_similarity(layer)
            order = torch.randperm(sim.shape[0], generator=generator)
            permuted[which].append(measures(sim[order][:, order], reference, keep))
    names = data.class_names
    top_vectors = similarity_agreement(trained.semantic_similarity(TEACHER_LOGITS), confusion, top_k=TOP)
    lines = [
        f"Command: `python benchmarks/explanation_benchmark.py --workdir {workdir} --output docs/results.md "
        f"--section explanation`{' (--quick)' if quick else ''}",
        "",
        f"- Teacher: the glyph benchmark's (test accuracy {100 * accuracy:.2f} % on the "
        f"{labels.numel()} test images of the 6 held-out fonts); its penultimate layer has "
        f"{int(alive.sum())} of {alive.numel()} neurons alive on them.",
        f"- Chance: {permutations} permutations of the trained vectors' neurons (mean, 95th percentile); "
        f"p: one-sided, (1 + permutations at least as high) / (1 + {permutations}). "
        f"Wall time {time.perf_counter() - start:.0f} s.",
        "",
        "| layer: reference | similarity | Spearman | top-15 pairs shared | p (Spearman, pairs) |",
        "|---|---|---|---|---|",
    ]
    for name, (rho, overlap) in point.items():
        which = rows[name][2]
        what = "logits: teacher's confusion" if which == "logits" else "penultimate: class profiles"
        perm = np.array(permuted[which])
        p_rho = (1 + int((perm[:, 0] >= rho).sum())) / (1 + permutations)
        p_pairs = (1 + int((perm[:, 1] >= overlap).sum())) / (1 + permutations)
        lines.append(f"| {what} | {name.rsplit(' (', 1)[0]} | {rho:+.3f} | {overlap:.0f} | {p_rho:.3f}, {p_pairs:.3f} |")
        if name.startswith("untrained"):
            rho95, pairs95 = np.nanpercentile(perm, 95, axis=0)
            lines.append(f"| {what} | chance: trained vectors, neurons permuted | {np.nanmean(perm[:, 0]):+.3f} "
                         f"(95th pct. {rho95:+.3f}) | {perm[:, 1].mean():.2f} (95th pct. {pairs95:.0f}) | |")
    pairs = lambda ps: ", ".join(f"{names[i]}/{names[j]}" for i, j in ps.tolist())
    lines += ["", f"The 15 most similar pairs of logit vectors: {pairs(top_vectors.top_pairs)}.",
              f"The 15 pairs the teacher confuses most on the test fonts: {pairs(top_vectors.reference_pairs)}.", ""]
    record = {"point": point, "accuracy": accuracy, "alive": int(alive.sum()),
              "permuted": {k: np.nanmean(np.array(v), axis=0).tolist() for k, v in permuted.items()}}
    return "\n".join(lines), record


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="the glyph benchmark's workdir (teacher files)")
    parser.add_argument("--permutations", type=int, default=1000, help="permutations of the neurons for chance")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: a one-epoch teacher (seconds)")
    parser.add_argument("--output", type=Path, default=None, help="markdown file for the table")
    parser.add_argument("--section", default="explanation", help="marked section of --output to replace")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        text, _ = run(workdir, args.permutations, args.quick)
    print(text)
    if args.output is not None:
        write_section(args.output, args.section, text)
    return text


if __name__ == "__main__":
    main()
