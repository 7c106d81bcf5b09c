"""CIFAR-100, teacher resnet32x4 -> student resnet8x4: static distillation vs KD vs RKD.

Meant for a machine with a GPU and the CIFAR-100 python files (torchvision's layout,
``<data-dir>/cifar-100-python/{train,test,meta}``; ``--download`` fetches them)::

    python examples/cifar100_static_vs_kd_vs_rkd.py --data-dir data --download --epochs 240
    python examples/cifar100_static_vs_kd_vs_rkd.py --data-dir data --epochs 240 \\
        --accelerator gpu --devices 1 --precision bf16-mixed
    python examples/cifar100_static_vs_kd_vs_rkd.py --smoke   # CPU, tiny fake data, no download

What it does:

1. Trains the teacher (SGD, lr 0.05, cosine schedule, weight decay 5e-4, batch 64) with a
   ``SemanticVectorCallback`` on its logits (``net.fc``), then writes ``<out>/resnet32x4.pt``
   (its weights) and ``<out>/resnet32x4.semvec.safetensors`` (its knowledge). Both are reused
   when the script runs again with the same ``--out``.
2. Trains the student once per method, with the same seed, data order and schedule:
   ``static`` (the knowledge file only: the teacher is never run), ``kd`` (Hinton, T = 4, the
   teacher runs on every batch) and ``rkd`` (distances and angles of the ``avgpool`` features).
3. Prints the test top-1 accuracy of each (validation uses the test split, as the CIFAR
   distillation benchmarks do). TensorBoard logs go to ``<out>/<run>``.

``--teacher`` and ``--student`` pick other CIFAR ResNets (``resnet20``, ``resnet56``, ...).
``--smoke`` (or ``SEMVEC_EXAMPLES_SMOKE=1``) runs every step for two batches of random 32x32
images written in CIFAR-100's own file format to a temporary folder: on the CPU unless
``--accelerator`` says otherwise, and with a resnet20 teacher unless ``--teacher`` does
(resnet32x4 is slow on a CPU). Numbers from a smoke run mean nothing.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision import datasets

from lightning_semvec import (
    SemanticVectorCallback,
    StaticDistillationModule,
    TeacherDistillationModule,
)
from lightning_semvec.data import CIFAR100DataModule
from lightning_semvec.models import ImageClassifier, build_model, cosine_schedule

# SGD with momentum, lr 0.05 and weight decay 5e-4, as in the CRD benchmark's recipe.
SGD = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4)
RESNETS = ["resnet8x4", "resnet20", "resnet32x4", "resnet56"]  # CIFAR ResNets: fc, avgpool, layer3


def make_student(
    name: str, method: str, knowledge: Path, teacher: torch.nn.Module, epochs: int
) -> pl.LightningModule:
    student = build_model(name, num_classes=100)
    if method == "static":
        # Add "layer3": "net.layer3" (with student_widths={"layer3": 256}) to pair the last stage
        # too; the teacher's callback must then also hook "net.layer3".
        return StaticDistillationModule(student, knowledge, layer_map={"fc": "net.fc"},
                                        optimizer=SGD, lr_scheduler=cosine_schedule(epochs))
    features = {} if method == "kd" else {"student_feature_layer": "avgpool",
                                          "teacher_feature_layer": "avgpool"}
    return TeacherDistillationModule(student, teacher, num_classes=100, method=method,
                                     optimizer=SGD, lr_scheduler=cosine_schedule(epochs), **features)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--download", action="store_true", help="fetch CIFAR-100 if missing")
    parser.add_argument("--out", default="cifar100_runs")
    parser.add_argument("--epochs", type=int, default=240)
    parser.add_argument("--methods", default="static,kd,rkd", help="comma separated")
    parser.add_argument("--teacher", choices=RESNETS, help="default resnet32x4 (smoke: resnet20)")
    parser.add_argument("--student", choices=RESNETS, default="resnet8x4")
    parser.add_argument("--accelerator", help="default auto (smoke: cpu)")
    parser.add_argument("--devices", help="default auto (smoke: 1)")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        default=os.environ.get("SEMVEC_EXAMPLES_SMOKE") == "1")
    args = parser.parse_args(argv)
    out = Path(args.out)
    epochs = 1 if args.smoke else args.epochs
    teacher_name = args.teacher or ("resnet20" if args.smoke else "resnet32x4")

    def trainer(name: str, **kwargs) -> pl.Trainer:
        limits = dict(limit_train_batches=2, limit_val_batches=1, limit_test_batches=1,
                      num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
                      enable_model_summary=False) if args.smoke else {}
        return pl.Trainer(**{"max_epochs": epochs, "precision": args.precision,
                             "accelerator": args.accelerator or ("cpu" if args.smoke else "auto"),
                             "devices": args.devices or (1 if args.smoke else "auto"),
                             "logger": TensorBoardLogger(out, name=name),
                             "enable_checkpointing": False, **limits, **kwargs})

    with fake_cifar100() if args.smoke else nullcontext(args.data_dir) as data_dir:
        data = CIFAR100DataModule(data_dir, download=args.download, val_fraction=0.0,
                                  batch_size=4 if args.smoke else 64,
                                  num_workers=0 if args.smoke else args.num_workers)
        missing = [] if args.download else data.missing_files()
        if missing:  # the datamodule's own hint names the LightningCLI flag, not this script's
            parser.error(
                f"CIFAR-100 files not found in {Path(data_dir) / 'cifar-100-python'} (missing: "
                f"{', '.join(p.name for p in missing)}). Pass --download to fetch them, or "
                "--data-dir with the folder that holds cifar-100-python/."
            )
        out.mkdir(parents=True, exist_ok=True)
        teacher_path = out / f"{teacher_name}.pt"
        knowledge = out / f"{teacher_name}.semvec.safetensors"
        if not (teacher_path.is_file() and knowledge.is_file()):
            pl.seed_everything(args.seed)
            teacher = ImageClassifier(teacher_name, num_classes=100, in_channels=3,
                                      optimizer=SGD, lr_scheduler=cosine_schedule(epochs))
            semvec = SemanticVectorCallback(layers=["net.fc"], dim=32)
            run = trainer("teacher", callbacks=[semvec])
            run.fit(teacher, datamodule=data)
            semvec.export_knowledge(knowledge, overwrite=True)  # only global rank 0 writes; a rerun replaces it
            if run.is_global_zero:
                torch.save(teacher.net.state_dict(), teacher_path)
            run.strategy.barrier()  # with several processes, the others wait for both files
        teacher_net = build_model(teacher_name, num_classes=100)
        teacher_net.load_state_dict(torch.load(teacher_path, weights_only=True))

        results = {}
        for method in args.methods.split(","):
            pl.seed_everything(args.seed)  # the same student initialisation for every method
            module = make_student(args.student, method, knowledge, teacher_net, epochs)
            run = trainer(f"student_{method}")
            run.fit(module, datamodule=data)
            results[method] = run.test(module, datamodule=data, verbose=False)[0]["test/acc"]

    if run.is_global_zero:
        print(f"\n{teacher_name} -> {args.student} on CIFAR-100, {epochs} epochs: "
              "test top-1 accuracy")
        for method, accuracy in results.items():
            print(f"  {method:<7} {100 * accuracy:6.2f} %")
    return 0


@contextmanager
def fake_cifar100(num_train: int = 16, num_test: int = 8) -> Iterator[str]:
    """Random images in CIFAR-100's on-disk format (python pickles) in a temporary folder.

    torchvision checks each file's md5 against the real dataset's, so while the block runs
    ``datasets.CIFAR100``'s checksum lists point at these files instead (restored afterwards).
    """
    cls, rng = datasets.CIFAR100, np.random.default_rng(0)
    saved = cls.train_list, cls.test_list, cls.meta
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root, cls.base_folder)
        folder.mkdir()
        for name, n in (("train", num_train), ("test", num_test)):
            fine = rng.integers(0, 100, n).tolist()
            pixels = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)  # R, G, B planes
            record = {"data": pixels, "fine_labels": fine, "coarse_labels": [f // 5 for f in fine]}
            (folder / name).write_bytes(pickle.dumps(record))
        meta = {"fine_label_names": [f"class_{i}" for i in range(100)],
                "coarse_label_names": [f"superclass_{i}" for i in range(20)]}
        (folder / "meta").write_bytes(pickle.dumps(meta))

        def md5(name: str) -> str:
            return hashlib.md5((folder / name).read_bytes()).hexdigest()

        cls.train_list, cls.test_list = [["train", md5("train")]], [["test", md5("test")]]
        cls.meta = {**cls.meta, "md5": md5("meta")}
        try:
            yield root
        finally:
            cls.train_list, cls.test_list, cls.meta = saved


if __name__ == "__main__":
    raise SystemExit(main())
