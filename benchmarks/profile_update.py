"""Where the callback's time goes, per training step, on one case of ``performance.py``.

    python benchmarks/profile_update.py                        # the demo CNN
    python benchmarks/profile_update.py --case linear_65536 --steps 60

In one process, with timers around the callback's parts (medians over the timed steps):

- ``readout hooks``: a step with a callback whose update is a no-op minus a step without one
  (three alternating runs each; the forward hooks and their readouts, nothing else; with
  ``every_n_steps`` above 1 the layers are read only on the steps that update);
- ``update``: the callback's ``on_train_batch_end`` on an updating step, split into
  ``gradients`` (:func:`~lightning_semvec.functional.alignment_gradients`), ``optimizer step``
  (with the bad-layer logic; ``torch accelerator check`` is what ``Optimizer.step`` spends
  asking whether an accelerator is present, which Lightning makes an NVML query) and the rest
  (gather, subsets, bookkeeping).

This explains the ratios that ``performance.py`` measures; it is not a second benchmark.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import performance


def _fit(case: str, variant: str, steps: int, patch: Callable[[Any], None] | None = None) -> list[float]:
    """Seconds of each training step after 10 warm-up steps (``performance.fit_timed``)."""
    built = variant if case == "distill" else ("plain" if variant == "plain" else "callback")

    def prepare(callbacks: list[Any]) -> None:
        if variant == "never":  # reads the layers at every step, never updates
            callbacks[0]._update = lambda *args: None
        if patch is not None:
            patch(callbacks[0])

    times, _ = performance.fit_timed(case, built, steps + 10, logger=False, patch=prepare)
    return times[10:]


def _timed(owner: Any, attribute: str, into: list[float]) -> None:
    original = getattr(owner, attribute)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = original(*args, **kwargs)
        into.append(time.perf_counter() - start)
        return result

    setattr(owner, attribute, wrapper)


def _profile_static_distillation(steps: int) -> int:
    """Static distillation: its per-step term, timed inside steps of the same process."""
    from lightning_semvec import StaticDistillationModule

    term: list[float] = []
    plain: list[float] = []
    static: list[float] = []
    original = StaticDistillationModule.distillation_losses
    _timed(StaticDistillationModule, "distillation_losses", term)
    try:
        for _ in range(3):
            plain.append(statistics.median(_fit("distill", "plain", steps)))
            static.append(statistics.median(_fit("distill", "static", steps)))
    finally:
        StaticDistillationModule.distillation_losses = original  # type: ignore[method-assign]
    rows = [
        ("plain student step, per fit", ", ".join(f"{t * 1e3:.2f}" for t in plain)),
        ("static distillation step, per fit", ", ".join(f"{t * 1e3:.2f}" for t in static)),
        ("static term's forward (distillation_losses), median", f"{statistics.median(term) * 1e3:.3f}"),
    ]
    print(f"distill: {performance.machine()}; medians over {steps} steps\n")
    print("| part | ms per step |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="demo_cnn", choices=[c for c in performance.CASES if c != "epoch_end"])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)

    import torch

    import lightning_semvec.vectors.semantic_vectors as vectors_module

    if args.case == "distill":
        return _profile_static_distillation(args.steps)
    plain: list[float] = []
    never: list[float] = []
    for _ in range(3):
        plain.append(statistics.median(_fit(args.case, "plain", args.steps)))
        never.append(statistics.median(_fit(args.case, "never", args.steps)))

    parts: dict[str, list[float]] = {"update": [], "gradients": [], "optimizer step": []}

    def patch(semvec: Any) -> None:
        _timed(semvec, "on_train_batch_end", parts["update"])

    originals = (vectors_module.alignment_gradients, vectors_module.step_skipping_bad_layers)
    _timed(vectors_module, "alignment_gradients", parts["gradients"])
    _timed(vectors_module, "step_skipping_bad_layers", parts["optimizer step"])
    try:
        steps = _fit(args.case, "callback", args.steps, patch)
    finally:
        vectors_module.alignment_gradients, vectors_module.step_skipping_bad_layers = originals
    start = time.perf_counter()
    for _ in range(200):
        torch.accelerator.current_accelerator(check_available=True)
    check = (time.perf_counter() - start) / 200

    ms = {name: statistics.median(values) * 1e3 for name, values in parts.items()}
    calls = len(parts["gradients"]) / max(1, len(parts["update"]))
    ms["gradients"] *= calls  # several calls per update when layers go in several runs
    rows = [
        ("step without the callback", statistics.median(plain) * 1e3),
        ("step with the callback (updating)", statistics.median(steps) * 1e3),
        ("readout hooks (callback with a no-op update minus none)", (statistics.median(never) - statistics.median(plain)) * 1e3),
        ("update (on_train_batch_end)", ms["update"]),
        (f"  gradients ({calls:.0f} call(s) of alignment_gradients)", ms["gradients"]),
        ("  optimizer step, skip logic included", ms["optimizer step"]),
        ("    of which torch's accelerator check in Optimizer.step", check * 1e3),
        ("  rest (gather, subsets, bookkeeping)", ms["update"] - ms["gradients"] - ms["optimizer step"]),
    ]
    print(f"{args.case}: {performance.machine()}; medians over {args.steps} steps\n")
    print("| part | ms per step |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
