"""The LightningCLI programs behind ``semvec fit`` and ``semvec distill``.

Imported only when one of them runs (Lightning and torch are slow to import), by
:mod:`lightning_semvec.cli._main`. What a user sees of them, beyond LightningCLI's own behaviour:

* defaults that finish in about a minute on the digits on 2 CPU cores (:data:`DEFAULT_MAX_EPOCHS`
  and :data:`DISTILL_MAX_EPOCHS`, analysis every :data:`DEFAULT_LOG_EVERY_N_EPOCHS` epochs and at
  the end);
* ``--help`` named after the command (``usage: semvec distill [options]``), starting with the
  options to try first, the package's own groups before the Trainer's, and examples that keep
  their line breaks;
* a parse error is one line, ``semvec fit: error: ...``, with "did you mean ...?" for a misspelt
  key, and exit status 2 (no 70 lines of usage);
* a summary at the end of training: validation metrics, log folder, checkpoint, knowledge file
  and the next commands (on global rank 0 only).
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from typing import Any, NoReturn, cast

from jsonargparse import DefaultHelpFormatter
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_semvec.analysis.options import AnalysisOptions
from lightning_semvec.callback.checkpoint import check_output_path
from lightning_semvec.callback.semantic_vector_callback import SemanticVectorCallback
from lightning_semvec.cli._data_names import DATA_MODULES, expand_data_names
from lightning_semvec.cli._parse_errors import one_line_error
from lightning_semvec.distillation import StaticDistillationModule

DEFAULT_MAX_EPOCHS = 10
"""``--trainer.max_epochs`` of ``semvec fit`` (Lightning's own is 1000)."""

DISTILL_MAX_EPOCHS = 30
"""``--trainer.max_epochs`` of ``semvec distill``: the student is small and fast (as in the demo)."""

DEFAULT_LOG_EVERY_N_EPOCHS = 5
"""``--semvec.analysis.log_every_n_epochs`` of ``semvec fit``: analysis and projector every 5
epochs and once more at the end (figures: at the end), not every epoch."""

FIT_START = f"""Train a LightningModule with the semantic vector callback (default: the demo CNN on the
digits, {DEFAULT_MAX_EPOCHS} epochs, about a minute on 2 CPU cores). Start here:
  --semvec.layers '[net.features.*, net.classifier.3]'   layers (names or globs) to learn vectors for
  --semvec.dim 16                                        size of each neuron's vector
  --trainer.max_epochs 50                                train longer (default {DEFAULT_MAX_EPOCHS})
  --knowledge teacher.semvec.safetensors                 export the vectors after fit
  --model ..., --data ...                                your LightningModule and LightningDataModule
The groups below: model, data, semvec (the callback), then optimizer and Trainer options."""

FIT_EXAMPLES = f"""examples:
  semvec fit                                          # demo CNN on the digits, {DEFAULT_MAX_EPOCHS} epochs
  semvec fit --trainer.max_epochs 50                  # train longer
  semvec fit --semvec.dim 16 --knowledge teacher.semvec.safetensors
  semvec fit --model lightning_semvec.models.ImageClassifier --model.model resnet20 \\
             --model.in_channels 3 --data lightning_semvec.data.CIFAR10DataModule \\
             --data.download true --semvec.layers '[net.layer1, net.layer2, net.layer3, net.fc]'
  semvec fit --print_config > fit.yaml && semvec fit --config fit.yaml
"""

DISTILL_START = f"""Static distillation: train a student on the data while pulling its layers towards a
knowledge file's vectors (no teacher at run time; default: the digits, {DISTILL_MAX_EPOCHS} epochs).
Start here:
  --model.knowledge teacher.semvec.safetensors           the knowledge file (semvec fit --knowledge)
  --model.student lightning_semvec.models.SmallCNN       the student model
  --model.layer_map '{{classifier.3: net.classifier.3}}'   student layer: knowledge layer
  --trainer.max_epochs 50                                train longer (default {DISTILL_MAX_EPOCHS})"""

DISTILL_EXAMPLES = """examples:
  semvec distill --model.knowledge teacher.semvec.safetensors \\
                 --model.student lightning_semvec.models.SmallCNN --model.student.width 4 \\
                 --model.layer_map '{classifier.3: net.classifier.3}'
  semvec distill ... --trainer.max_epochs 50          # train longer
  semvec distill --print_config > distill.yaml && semvec distill --config distill.yaml
"""


class HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's formatter, keeping the line breaks of the description and the examples
    (as :class:`argparse.RawDescriptionHelpFormatter` does)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


class SemvecArgumentParser(LightningArgumentParser):
    """LightningCLI's parser with a one-line error message (and a suggestion for a misspelt key)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        prog = self.prog.split(" [options]")[0]
        print(f"{prog}: error: {one_line_error(self, message)}", file=sys.stderr)
        sys.exit(2)


class SemvecLightningCLI(LightningCLI):
    """What ``semvec fit`` and ``semvec distill`` share: the ``fit`` subcommand only, named after
    the command, the package's groups first, a short default run and a summary at the end."""

    command = "semvec"
    max_epochs = DEFAULT_MAX_EPOCHS
    start_here = ""
    examples = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", SemvecArgumentParser)
        kwargs.setdefault("parser_kwargs", {
            "prog": self.command, "formatter_class": HelpFormatter,
            "fit": {"description": self.start_here, "epilog": self.examples,
                    "usage": "%(prog)s [options]"},
        })
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        self.raw_args: list[str] = expand_data_names(kwargs.get("args") or [])
        kwargs["args"] = self.raw_args
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"fit": LightningCLI.subcommands()["fit"]}

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        # Private hook, the one place where jsonargparse has already named the subcommand's parser
        # "semvec fit [options] fit" and all groups exist.
        for subparser in self._subcommand_parsers.values():
            subparser.prog = parser.prog
            groups = cast(list[Any], subparser._action_groups)  # a list at run time; typeshed says Sequence
            for key in ("trainer",):  # the Trainer's 400 lines after model, data and semvec
                group = subparser.groups.get(key) if subparser.groups else None
                if group in groups:
                    groups.remove(group)
                    groups.append(group)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # 20 batches an epoch on the digits: Lightning's 50-step logging interval would leave
        # 4 points per curve (and warn); every 5 steps gives 40 in a default run.
        parser.set_defaults({"trainer.max_epochs": self.max_epochs, "trainer.log_every_n_steps": 5})

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, with :func:`default_logger` where Lightning would make its own
        (``--trainer.logger`` not given, or ``true``): the same logger without the
        ``hp_metric`` chart stuck at -1."""
        trainer_config = self.config_init[self.subcommand]
        logger, barebones = trainer_config.get("trainer.logger"), trainer_config.get("trainer.barebones")
        if "logger" not in kwargs and (logger is True or (logger is None and not barebones)):
            kwargs["logger"] = default_logger(trainer_config.get("trainer.default_root_dir"))
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:
            print(self.summary(), flush=True)

    def summary_paths(self) -> dict[str, str]:
        return {}

    def next_commands(self, checkpoint: str | None) -> list[str]:
        return []

    def summary(self) -> str:
        """What the run produced and what to run next."""
        trainer = self.trainer
        metrics = {k: v for k, v in trainer.callback_metrics.items()
                   if k.startswith("val") and getattr(v, "numel", lambda: 1)() == 1}
        epochs, steps = trainer.current_epoch, trainer.global_step
        lines = [f"{self.command}: done, {epochs} epoch{'s' * (epochs != 1)} "
                 f"({steps} step{'s' * (steps != 1)})."]
        if metrics:
            lines.append("  validation:  " + ", ".join(
                f"{k} {float(v):.4g}" for k, v in sorted(metrics.items())))
        checkpoint = None
        callback = trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint):
            checkpoint = callback.best_model_path or callback.last_model_path or None
        log_dir = trainer.log_dir if trainer.logger is not None else None
        for label, path in (("logs", log_dir), ("checkpoint", checkpoint),
                            *self.summary_paths().items()):
            if path:
                lines.append(f"  {label + ':':<12} {_short(path)}")
        commands = self.next_commands(checkpoint and _short(checkpoint))
        if log_dir:
            commands.append(f"tensorboard --logdir {shlex.quote(_short(log_dir))}")
        if commands:
            lines.append("next:")
            lines.extend(f"  {command}" for command in commands)
        return "\n".join(lines)


_IMAGE_CLASSIFIER = "lightning_semvec.models.ImageClassifier"


def default_logger(default_root_dir: str | os.PathLike[str] | None) -> TensorBoardLogger:
    """The logger ``Trainer(logger=True)`` makes (a ``TensorBoardLogger`` in
    ``<default_root_dir>/lightning_logs``, versioned by the SLURM job when there is one), with
    ``default_hp_metric=False``: without hyperparameter metrics of its own, Lightning's default
    logs ``hp_metric = -1`` once, a chart that stays at -1 on top of TensorBoard's page."""
    save_dir = os.fspath(default_root_dir) if default_root_dir else os.getcwd()
    return TensorBoardLogger(save_dir=save_dir, version=SLURMEnvironment.job_id(),
                             default_hp_metric=False)


def _short(path: str | os.PathLike) -> str:
    """``path`` relative to the current folder when it is inside it."""
    path = os.fspath(path)
    relative = os.path.relpath(path) if os.path.isabs(path) else path
    return path if relative.startswith("..") else relative


class SemvecFitCLI(SemvecLightningCLI):
    """``semvec fit``: the callback under ``--semvec`` and ``--knowledge`` for export."""

    command = "semvec fit"
    start_here = FIT_START
    examples = FIT_EXAMPLES

    def __init__(self, args: list[str]) -> None:
        self._knowledge: str | None = None
        super().__init__(LightningModule, LightningDataModule, subclass_mode_model=True,
                         subclass_mode_data=True, args=["fit", *args])

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_lightning_class_args(SemanticVectorCallback, "semvec")
        parser.add_argument(
            "--knowledge", type=str | None, default=None,
            help="after fit, export the learned vectors to this knowledge file",
        )
        flag = parser.add_argument(
            "--overwrite", type=bool, default=False,
            help="replace the --knowledge file if it exists (else that is an error before training)",
        )
        flag.nargs, flag.const = "?", True  # "--overwrite" alone means true, as in semvec export
        parser.set_defaults({
            "model": {"class_path": "lightning_semvec.models.ImageClassifier"},
            "data": {"class_path": "lightning_semvec.data.DigitsDataModule"},
            "semvec.layers": ["net.features.*", "net.classifier.3"],
            "semvec.analysis": AnalysisOptions(log_every_n_epochs=DEFAULT_LOG_EVERY_N_EPOCHS),
        })

    def before_instantiate_classes(self) -> None:
        # Analysed at least once: a run shorter than the cadence (--trainer.max_epochs 3 with
        # every 5) is analysed at its last epoch, so the knowledge file has statistics.
        config = self.config[self.subcommand]
        analysis, max_epochs = config.get("semvec.analysis"), config.get("trainer.max_epochs")
        every = getattr(analysis, "log_every_n_epochs", None)
        if isinstance(every, int) and isinstance(max_epochs, int) and 0 < max_epochs < every:
            analysis.log_every_n_epochs = max_epochs
        self._classes_of_the_data(config)
        if config.get("knowledge"):  # before training: an hour's fit must not end in this error
            check_output_path(config["knowledge"], bool(config.get("overwrite")))

    def _classes_of_the_data(self, config: Any) -> None:
        """The default model (``ImageClassifier``) takes the class count of the package's data
        modules (62 for ``--data glyphs``) unless the command line names one."""
        model, data = config.get("model"), config.get("data")
        named = any(arg.startswith(("--model.num_classes", "--model.init_args.num_classes", "--config"))
                    for arg in self.raw_args)
        if named or model is None or data is None or model.get("class_path") != _IMAGE_CLASSIFIER:
            return
        path = data.get("class_path")
        if path not in DATA_MODULES.values():
            return
        module, _, name = path.rpartition(".")
        classes = getattr(getattr(importlib.import_module(module), name), "num_classes", None)
        if isinstance(classes, int):
            model["init_args"]["num_classes"] = classes

    def after_fit(self) -> None:
        path = self.config[self.subcommand].get("knowledge")
        if path:
            semvec = next(
                c for c in self.trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning's callback connector
                if isinstance(c, SemanticVectorCallback)
            )
            self._knowledge = str(semvec.export_knowledge(
                path, overwrite=bool(self.config[self.subcommand].get("overwrite"))))
        super().after_fit()

    def summary_paths(self) -> dict[str, str]:
        return {"knowledge": self._knowledge} if self._knowledge else {}

    def next_commands(self, checkpoint: str | None) -> list[str]:
        knowledge = self._knowledge
        commands = []
        if knowledge is None and checkpoint:
            knowledge = "teacher.semvec.safetensors"
            commands.append(f"semvec export {shlex.quote(checkpoint)} {knowledge}")
        if knowledge:
            commands.append(f"semvec report {shlex.quote(_short(knowledge))} report/")
        return commands


class SemvecDistillCLI(SemvecLightningCLI):
    """``semvec distill``: :class:`StaticDistillationModule` on any datamodule (the digits)."""

    command = "semvec distill"
    max_epochs = DISTILL_MAX_EPOCHS
    start_here = DISTILL_START
    examples = DISTILL_EXAMPLES

    def __init__(self, args: list[str]) -> None:
        super().__init__(StaticDistillationModule, LightningDataModule, subclass_mode_data=True,
                         args=["fit", *args])

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.set_defaults({"data": {"class_path": "lightning_semvec.data.DigitsDataModule"}})
