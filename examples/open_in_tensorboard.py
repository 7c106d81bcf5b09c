"""Train briefly with the callback and a TensorBoardLogger, then look at the neurons.

Run from the repository root (scikit-learn's embedded digits: nothing is downloaded)::

    python examples/open_in_tensorboard.py                  # 5 epochs, under a minute
    python examples/open_in_tensorboard.py --smoke          # a few batches (tests use it)
    tensorboard --logdir semvec_tensorboard                 # the command the script prints

What TensorBoard shows for each hooked layer (the two conv stages after their ReLUs,
``net.features.1`` and ``net.features.3``, and the logits ``net.classifier.3``):

- Scalars: ``semvec/<layer>/align_loss`` and ``skipped_steps`` (training), and after each
  validation ``semvec/<layer>/fidelity`` (Spearman's rho between held-out activation
  similarity and the vectors' similarity) and ``neighbour_agreement``.
- Images: ``semvec/<layer>/similarity`` (semantic next to activation similarity) and
  ``semvec/<layer>/pca`` (the vectors on their first two principal components).
- Projector: the vectors as points, labelled with each neuron's preferred class, class
  selectivity, mean activation and dead/alive, with the input that activates it most.

It also writes a static HTML report of the knowledge file (``<out>/report/index.html``) that
any browser opens without a server. Set ``SEMVEC_EXAMPLES_SMOKE=1`` instead of passing
``--smoke`` if you prefer.
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_semvec import AnalysisOptions, SemanticVectorCallback, write_report
from lightning_semvec.data import DigitsDataModule
from lightning_semvec.models import ImageClassifier, SmallCNN


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="semvec_tensorboard", help="TensorBoard log folder")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--smoke", action="store_true",
                        default=os.environ.get("SEMVEC_EXAMPLES_SMOKE") == "1",
                        help="a tiny run: 1 epoch of 4 batches")
    args = parser.parse_args(argv)

    pl.seed_everything(0, verbose=False)
    model = ImageClassifier(SmallCNN(in_channels=1, num_classes=10, width=16, hidden=64),
                            optimizer=functools.partial(torch.optim.Adam, lr=1e-2))
    semvec = SemanticVectorCallback(
        layers=["net.features.1", "net.features.3", "net.classifier.3"], dim=8, lr=0.05,
        # "grid" shows each neuron's 9 best inputs; "off" none
        analysis=AnalysisOptions(projector_images="top1"),
    )
    logger = TensorBoardLogger(save_dir=args.out, name="digits")
    trainer = pl.Trainer(
        max_epochs=1 if args.smoke else args.epochs,
        limit_train_batches=4 if args.smoke else None,
        limit_val_batches=2 if args.smoke else None,
        callbacks=[semvec], logger=logger, log_every_n_steps=1 if args.smoke else 5,
        enable_checkpointing=False,
        enable_progress_bar=not args.smoke, enable_model_summary=False,
    )
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=64))
    knowledge = semvec.export_knowledge(Path(logger.log_dir) / "digits.semvec.safetensors")

    # The statistics travel in the knowledge file: the report needs nothing else.
    # This script's own report: a rerun replaces it (without overwrite=True, a folder that holds
    # files is an error).
    index = write_report(knowledge, Path(args.out) / "report", overwrite=True)
    print(f"Offline report: {index}")
    print(f"Knowledge file: {knowledge}")
    print(f"TensorBoard logs: {logger.log_dir}")
    print(f"  see them with:  tensorboard --logdir {args.out}")
    print("  then open the Scalars, Images and Projector tabs (pick a layer in the projector)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
