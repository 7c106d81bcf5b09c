"""Do the students' layers come to resemble the teacher's? Linear CKA and matched neurons, paired over seeds.

The students of ``distillation_benchmark.py`` (the same setting, seeds, initialisation, data and
order: its own functions train them), each compared with its teacher layer by layer on the
held-out test images:

- **Linear CKA** (Kornblith et al. 2019) between every teacher layer and every student layer,
  streamed with :class:`~lightning_semvec.metrics.LinearCKA` (the minibatch-unbiased HSIC of
  Nguyen et al. 2021) over the test set in fixed batches (``--cka-batch``, 256) in its stored
  order, each layer's activations flattened (a conv stage: channels x height x width).
- **Matched-neuron correlation**: for each alive student neuron (a conv stage's channel
  averaged over positions), its highest Pearson correlation over the test images with any
  alive teacher neuron of the same layer, averaged over the alive student neurons; at the
  logits (one neuron per class in both networks) also the correlation of student neuron ``i``
  with teacher neuron ``i``. A neuron is dead when it is constant over the test images.
  Computed here directly from the activations (float64), not from
  :func:`~lightning_semvec.embed_models`, whose matching pairs neurons by the cosine of their
  fitted joint vectors and so is an approximation of the best correlation.

Methods (``--methods``; names of ``distillation_methods.py``): the plain student, the library's
defaults (``class_soft_targets+static_w0.1``, which read only the knowledge file), KD (the
teacher run on every batch) and the defaults fed the teacher's knowledge shuffled
(``class_soft_targets+static_w0.1_shuffled``), the control with the teacher's knowledge removed.
The table gives, per layer, each method's mean over seeds and the paired differences
(static - plain, KD - plain, static - KD, static - shuffled) with 95 % intervals (Student's t
over seeds, ``distillation_benchmark.paired``). Each student's test accuracy is checked
against the saved runs of ``distillation_benchmark.py`` given to ``--reference-json``.

The run of ``docs/results.md`` (the teacher cached by the distillation benchmark in
``--workdir``, so the numbers sit on the very teacher of its glyph table; one background process
on the shared 2-core machine)::

    OMP_NUM_THREADS=1 python benchmarks/comparison_benchmark.py --seeds 10 --workdir /work/bench/glyphs \
        --json /work/bench/comparison.json --output docs/results.md \
        --reference-json /work/bench/full/static.json /work/bench/full/teacher_run.json

Every finished student's numbers go to ``--json`` at once; a run with the same ``--json`` and
settings resumes, training only the students not yet there. ``--from-json FILE`` writes the
table of a saved run without training. Smoke mode (seconds, on the digits;
``tests/test_benchmarks_smoke.py``)::

    python benchmarks/comparison_benchmark.py --data digits --quick --output /tmp/results.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distillation_benchmark as bench
from distillation_methods import method_builders

from lightning_semvec import StaticKnowledge
from lightning_semvec.metrics import LinearCKA

STATIC = "class_soft_targets+static_w0.1"
SHUFFLED = "class_soft_targets+static_w0.1_shuffled"
DEFAULT_METHODS = ["plain", STATIC, "kd", SHUFFLED]
LABELS = {"plain": "plain", STATIC: "static", "kd": "KD", SHUFFLED: "static, shuffled"}
#: The paired differences of the table: (minuend, subtrahend).
CONTRASTS = [(STATIC, "plain"), ("kd", "plain"), (STATIC, "kd"), (STATIC, SHUFFLED)]
#: The layers compared, named alike in teacher and student (the setting's network); the last
#: is the logits.
LAYERS: dict[str, list[str]] = {
    "glyphs": ["features.2", "features.5", "features.8", "classifier.2", "classifier.3"],
    "digits": ["features.1", "features.4", "classifier.2", "classifier.3"],
}
SAME_INDEX = "classifier.3 (neuron i vs teacher neuron i)"


# ---------------------------------------------------------------------------------- measures
def layer_outputs(net: nn.Module, layers: Sequence[str], images: Tensor, batch: int) -> Iterator[list[Tensor]]:
    """The outputs of ``layers`` of ``net`` (eval mode, no grad) on ``images``, batch by batch,
    in the images' order."""
    captured: dict[str, Tensor] = {}
    handles = [net.get_submodule(name).register_forward_hook(
        lambda _m, _i, out, name=name: captured.__setitem__(name, out.detach())) for name in layers]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch):
                captured.clear()
                net(images[start:start + batch])
                yield [captured[name] for name in layers]
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)


def neuron_values(output: Tensor) -> Tensor:
    """``(B, neurons)``: a conv map's channels averaged over positions, a vector as it is."""
    return output.flatten(2).mean(2) if output.dim() > 2 else output


def pearson_columns(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pearson correlation of every column of ``a`` with every column of ``b`` (float64), NaN
    where either is constant; and which columns of ``a`` and ``b`` vary (are alive)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    norm_a, norm_b = np.sqrt((a * a).sum(0)), np.sqrt((b * b).sum(0))
    alive_a, alive_b = norm_a > 0, norm_b > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (a / norm_a).T @ (b / norm_b)
    corr[~alive_a] = np.nan
    corr[:, ~alive_b] = np.nan
    return corr, alive_a, alive_b


def matched_correlation(student: np.ndarray, teacher: np.ndarray) -> dict[str, Any]:
    """Each alive student neuron's best Pearson correlation with an alive teacher neuron.

    Args:
        student: ``(M, N_s)`` activations of the student's neurons on ``M`` inputs.
        teacher: ``(M, N_t)`` the teacher's on the same inputs.

    Returns:
        ``mean`` (over alive student neurons; NaN if none), ``best`` and ``match`` per student
        neuron (NaN and -1 for a dead one, or when every teacher neuron is dead), and the alive
        counts.
    """
    corr, alive_s, alive_t = pearson_columns(student.astype(np.float64), teacher.astype(np.float64))
    usable = alive_s & alive_t.any()
    best = np.full(len(alive_s), np.nan)
    match = np.full(len(alive_s), -1)
    if usable.any():
        rows = np.where(alive_t[None, :], corr[usable], -np.inf)
        match[usable] = rows.argmax(1)
        best[usable] = rows.max(1)
    return {"mean": float(best[usable].mean()) if usable.any() else math.nan,
            "best": best.tolist(), "match": match.tolist(),
            "alive_student": int(alive_s.sum()), "alive_teacher": int(alive_t.sum())}


def same_index_correlation(student: np.ndarray, teacher: np.ndarray) -> dict[str, Any]:
    """Correlation of student neuron ``i`` with teacher neuron ``i`` (the logits: class ``i``),
    and its mean over the pairs where both vary."""
    corr, _, _ = pearson_columns(student.astype(np.float64), teacher.astype(np.float64))
    diagonal = np.diagonal(corr).copy()
    finite = np.isfinite(diagonal)
    return {"mean": float(diagonal[finite].mean()) if finite.any() else math.nan, "per_neuron": diagonal.tolist()}


def compare(teacher: nn.Module, student: nn.Module, layers: Sequence[str], images: Tensor, labels: Tensor,
            batch: int) -> dict[str, Any]:
    """Every measure of one student against the teacher on ``images`` (see the module's doc)."""
    cka = LinearCKA(num_layers_a=len(layers), num_layers_b=len(layers))
    pooled_t: list[list[Tensor]] = [[] for _ in layers]
    pooled_s: list[list[Tensor]] = [[] for _ in layers]
    for outs_t, outs_s in zip(layer_outputs(teacher, layers, images, batch),
                              layer_outputs(student, layers, images, batch), strict=True):
        cka.update([o.flatten(1) for o in outs_t], [o.flatten(1) for o in outs_s])
        for i, (o_t, o_s) in enumerate(zip(outs_t, outs_s, strict=True)):
            pooled_t[i].append(neuron_values(o_t))
            pooled_s[i].append(neuron_values(o_s))
    logits = torch.cat(pooled_s[-1])
    correct = int((logits.argmax(1) == labels).sum())
    matrix = cka.compute().reshape(len(layers), len(layers))
    acts_t = [torch.cat(p).double().numpy() for p in pooled_t]
    acts_s = [torch.cat(p).double().numpy() for p in pooled_s]
    return {
        "cka": matrix.tolist(),  # rows: teacher layers; columns: student layers
        "cka_batches": int(cka.num_batches), "cka_skipped": int(cka.num_skipped),
        "matched": {name: matched_correlation(s, t) for name, s, t in zip(layers, acts_s, acts_t, strict=True)},
        "same_index": same_index_correlation(acts_s[-1], acts_t[-1]),
        "own_accuracy": correct / len(labels),
    }


# ---------------------------------------------------------------------------------- running
def config_of(args: argparse.Namespace) -> bench.Config:
    """The distillation benchmark's own configuration of these options (its defaults, its
    quick mode)."""
    argv = ["--data", args.data, "--seeds", str(args.seeds), "--first-seed", str(args.first_seed),
            "--threads", str(args.threads), "--methods", ",".join(args.methods)]
    if args.quick:
        argv.append("--quick")
    config, _ = bench.parse_args(argv)
    return config


def saved_runs(path: Path | None, identity: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The runs already in ``path`` if it was written with the same settings (else none)."""
    if path is None or not path.exists():
        return {}
    saved = json.loads(path.read_text())
    if {k: saved.get(k) for k in identity} != identity:
        raise SystemExit(f"{path} holds a run of other settings; pass another --json to start afresh")
    return dict(saved["runs"])


def write_json(path: Path, record: dict[str, Any]) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(record, indent=1))
    temporary.replace(path)


def run(args: argparse.Namespace, config: bench.Config, workdir: Path, command: str) -> dict[str, Any]:
    torch.set_num_threads(config.threads)
    layers = LAYERS[config.data]
    teacher, teacher_accuracy, untrained_accuracy = bench.teachers_of(config, workdir)
    knowledge = StaticKnowledge.load(workdir / "teacher.semvec.safetensors")
    untrained = StaticKnowledge.load(workdir / "untrained.semvec.safetensors")
    identity = {"config": dataclasses.asdict(config), "layers": layers, "cka_batch": args.cka_batch,
                "test_images": args.test_images}
    runs = saved_runs(args.json, identity)
    record = {**identity, "teachers": {"teacher": teacher_accuracy, "untrained": untrained_accuracy},
              "command": command, "runs": runs}
    for index in range(config.seeds):
        seed = config.first_seed + index
        done = runs.setdefault(str(seed), {})
        todo = [m for m in config.methods if m not in done]
        if not todo:
            print(f"seed {seed}: every method already in {args.json}", flush=True)
            continue
        data = bench.make_data(config, config.train_size, subset_seed=seed)
        builders = method_builders(config.student_net, teacher, knowledge, untrained, seed, config.lr,
                                   config.epochs, config.setting.num_classes)
        for method in todo:
            start = time.perf_counter()
            module, accuracy, timer = bench.train_student(config, data, builders[method], seed)
            images, labels = data.test_dataset.tensors  # type: ignore[attr-defined]
            if args.test_images is not None:
                images, labels = images[:args.test_images], labels[:args.test_images]
            measures = compare(teacher, module.network, layers, images, labels, args.cka_batch)  # type: ignore[arg-type]
            done[method] = {"accuracy": accuracy, **measures, "step_cpu_time": timer.median_cpu(),
                            "seconds": time.perf_counter() - start}
            diagonal = " ".join(f"{measures['cka'][i][i]:.3f}" for i in range(len(layers)))
            matched = " ".join(f"{measures['matched'][name]['mean']:.3f}" for name in layers)
            print(f"seed {seed} {method:>40}: test acc {accuracy:.4f}, CKA diagonal {diagonal}, matched "
                  f"{matched}, {done[method]['seconds']:.0f} s", flush=True)
            if args.json is not None:
                write_json(args.json, record)
            del module
    return record


# ---------------------------------------------------------------------------------- tables
def _interval(a: list[float], b: list[float]) -> str:
    mean, low, high = (v / 100 for v in bench.paired(a, b))  # paired() reports 100 x the difference
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def reference_check(record: dict[str, Any], paths: Sequence[Path]) -> tuple[list[str], dict[str, Any]]:
    """Each method's test accuracy per seed against the saved runs of the distillation benchmark."""
    config = {k: v for k, v in record["config"].items() if k != "methods"}
    reference: dict[str, list[float]] = {}
    first_seed = record["config"]["first_seed"]
    for path in paths:
        saved = json.loads(path.read_text())
        other = {k: v for k, v in saved["config"].items() if k != "methods"}
        if {k: v for k, v in other.items() if k != "seeds"} != {k: v for k, v in config.items() if k != "seeds"}:
            raise SystemExit(f"{path} is a run of other settings than this one")
        if saved["config"]["first_seed"] != first_seed:
            raise SystemExit(f"{path} starts at another seed")
        for method, numbers in saved["results"].items():
            reference.setdefault(method, numbers["accuracies"])
    checks: dict[str, Any] = {}
    for method in record["config"]["methods"]:
        ours = [record["runs"][seed][method]["accuracy"] for seed in sorted(record["runs"], key=int)]
        if method not in reference:
            checks[method] = {"compared": 0}
            continue
        pairs = list(zip(ours, reference[method], strict=False))
        checks[method] = {"compared": len(pairs), "equal": sum(a == b for a, b in pairs),
                          "max_abs_difference": max(abs(a - b) for a, b in pairs)}
    lines = []
    for method, check in checks.items():
        if check["compared"] == 0:
            lines.append(f"{method}: no saved run to compare with")
        else:
            lines.append(f"{method}: {check['equal']} of {check['compared']} seeds equal to the saved run "
                         f"(largest difference {100 * check['max_abs_difference']:.2f} points)")
    return lines, checks


def format_tables(record: dict[str, Any], references: Sequence[Path] = ()) -> str:
    config = bench.Config(**record["config"])
    layers = record["layers"]
    methods = [m for m in config.methods if m in LABELS] + [m for m in config.methods if m not in LABELS]
    seeds = sorted(record["runs"], key=int)
    complete = [s for s in seeds if all(m in record["runs"][s] for m in methods)]

    def values(method: str, get: Any) -> list[float]:
        return [float(get(record["runs"][s][method])) for s in complete]

    contrasts = [(a, b) for a, b in CONTRASTS if a in methods and b in methods]
    head = ("| layer pair | " + " | ".join(LABELS.get(m, m) for m in methods) + " | "
            + " | ".join(f"{LABELS.get(a, a)} − {LABELS.get(b, b)} [95 % CI]" for a, b in contrasts) + " |")
    rule = "|---" * (1 + len(methods) + len(contrasts)) + "|"

    def row(name: str, get: Any) -> str:
        means = [f"{statistics.fmean(values(m, get)):.3f}" for m in methods]
        deltas = [_interval(values(a, get), values(b, get)) for a, b in contrasts]
        return f"| {name} | " + " | ".join(means + deltas) + " |"

    cka_rows = [row(name, lambda run, i=i: run["cka"][i][i]) for i, name in enumerate(layers)]
    matched_rows = [row(name, lambda run, name=name: run["matched"][name]["mean"]) for name in layers]
    matched_rows.append(row(SAME_INDEX, lambda run: run["same_index"]["mean"]))
    alive = []
    for name in layers:
        counts = ", ".join(
            f"{LABELS.get(m, m)} {statistics.fmean(values(m, lambda run, n=name: run['matched'][n]['alive_student'])):.1f}"
            for m in methods)
        teacher_alive = {record["runs"][s][m]["matched"][name]["alive_teacher"] for s in complete for m in methods}
        alive.append(f"`{name}` teacher {'/'.join(map(str, sorted(teacher_alive)))}; students {counts}")
    accuracy_rows = []
    for m in methods:
        accs = [100 * a for a in values(m, lambda run: run["accuracy"])]
        own = [100 * a for a in values(m, lambda run: run["own_accuracy"])]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        accuracy_rows.append(f"{LABELS.get(m, m)} (`{m}`) {statistics.fmean(accs):.2f} ± {std:.2f} % "
                             f"(from the measured pass: {statistics.fmean(own):.2f} %)")
    setting = config.setting
    images = record["test_images"] or setting.test_images
    text = [
        f"Command: `{record['command']}`", "",
        f"- Data: {setting.description}; every measure on the first {images} test images, in their stored order.",
        f"- Teacher: {setting.network.__name__}(width={config.teacher_width}, hidden={config.teacher_hidden}), "
        f"the distillation benchmark's (test accuracy {100 * record['teachers']['teacher']:.2f}%); students: "
        f"{setting.network.__name__}(width={config.student_width}, hidden={config.student_hidden}) trained by "
        f"`distillation_benchmark.train_student`, {config.epochs} epochs on "
        f"{config.train_size or setting.train_images} images, seeds {complete[0]}..{complete[-1]} "
        f"({len(complete)} seeds; a seed fixes the initialisation and the training subset, the same for every "
        "method, and the data order is the same for every method).",
        f"- Methods: {', '.join(f'{LABELS.get(m, m)} = `{m}`' for m in methods)}.",
        "- Test accuracy, mean ± std over seeds: " + "; ".join(accuracy_rows) + ".",
    ]
    if references:
        lines, _ = reference_check(record, references)
        text.append("- Against the saved runs of `distillation_benchmark.py` ("
                    + ", ".join(f"`{p.name}`" for p in references) + "): " + "; ".join(lines) + ".")
    text += [
        f"- Alive neurons (varying over the test images), mean over seeds: {'; '.join(alive)}.", "",
        f"Linear CKA, teacher layer vs the same student layer (minibatch unbiased, batches of "
        f"{record['cka_batch']}, flattened activations; mean over seeds, then paired differences "
        "with 95 % intervals; the JSON holds every teacher x student layer matrix):", "",
        head, rule, *cka_rows, "",
        "Matched-neuron correlation: each alive student neuron's best Pearson correlation with any alive "
        "teacher neuron of the same layer (conv stages: channels averaged over positions), averaged over "
        "the student's alive neurons; the last row pairs logit i with the teacher's logit i:", "",
        head, rule, *matched_rows,
    ]
    return "\n".join(text) + "\n"


# ---------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=sorted(LAYERS), default="glyphs")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="comma-separated names of distillation_methods.py; 'plain' is always run")
    parser.add_argument("--cka-batch", type=int, default=256, help="images per CKA minibatch")
    parser.add_argument("--test-images", type=int, default=None, help="measure on the first N test images only")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="the distillation benchmark's --workdir (its cached teacher; default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="every run's numbers, written as they come; resumed")
    parser.add_argument("--output", type=Path, default=None, help="markdown file for the tables")
    parser.add_argument("--section", default="comparison", help="name of the marked section of --output")
    parser.add_argument("--reference-json", type=Path, nargs="+", default=[],
                        help="distillation_benchmark.py --json files whose accuracies the students must match")
    parser.add_argument("--from-json", type=Path, default=None, help="write the tables of a saved run")
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "plain" not in args.methods:
        args.methods.insert(0, "plain")
    if args.quick:
        args.cka_batch = min(args.cka_batch, 32)
        args.test_images = args.test_images or 96
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    if args.from_json is not None:
        record = json.loads(args.from_json.read_text())
    else:
        config = config_of(args)
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        for message in (".*does not have many workers.*", ".*LeafSpec.*", ".*module\\(s\\) in eval mode.*"):
            warnings.filterwarnings("ignore", message)
        command = " ".join(["python benchmarks/comparison_benchmark.py", *(sys.argv[1:] if argv is None else argv)])
        with tempfile.TemporaryDirectory() as scratch:
            workdir = args.workdir or Path(scratch)
            workdir.mkdir(parents=True, exist_ok=True)
            record = run(args, config, workdir, command)
    table = format_tables(record, args.reference_json)
    print(table)
    if args.output is not None:
        bench.write_section(args.output, args.section, table)
    return table


if __name__ == "__main__":
    main()
