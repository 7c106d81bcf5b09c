"""The ``semvec`` command line.

``semvec fit`` and ``semvec distill`` are :class:`~lightning.pytorch.cli.LightningCLI` programs,
so configs, ``--print_config``, YAML files (``--config``) and dotted overrides work as in any
Lightning project. ``semvec demo``, ``semvec report`` and ``semvec export`` are small
commands around the library.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

COMMANDS = {
    "fit": "train any LightningModule + LightningDataModule with the semantic vector callback",
    "distill": "static distillation of a student from a knowledge file (no teacher)",
    "demo": "teacher, plain student and static student on the embedded digits (no download)",
    "report": "an offline HTML report (figures + per-neuron table) from a knowledge file",
    "export": "a knowledge file from a checkpoint's callback state",
}

FIT_EXAMPLES = """examples:
  semvec fit                                          # demo CNN on the digits, default layers
  semvec fit --trainer.max_epochs 5 --semvec.dim 16 --knowledge teacher.semvec.safetensors
  semvec fit --model lightning_semvec.models.ImageClassifier --model.model resnet20 \\
             --model.in_channels 3 --data lightning_semvec.data.CIFAR10DataModule \\
             --data.download true --semvec.layers '[net.layer1, net.layer2, net.layer3, net.fc]'
  semvec fit --print_config > fit.yaml && semvec fit --config fit.yaml
"""

DISTILL_EXAMPLES = """examples:
  semvec distill --model.knowledge teacher.semvec.safetensors \\
                 --model.student lightning_semvec.models.SmallCNN --model.student.width 4 \\
                 --model.layer_map '{classifier.3: net.classifier.3}'
  semvec distill --print_config > distill.yaml && semvec distill --config distill.yaml
"""

TOP_HELP = "usage: semvec COMMAND [options]\n\n" + "\n".join(
    f"  {name:<8} {text}" for name, text in COMMANDS.items()
) + """

Each command has --help with examples. Start with:  semvec demo
"""


def _fit_cli(args: Sequence[str]) -> None:
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from lightning_semvec.callback import SemanticVectorCallback

    class SemvecFitCLI(LightningCLI):
        """LightningCLI with the callback under ``--semvec`` and ``--knowledge`` for export."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_lightning_class_args(SemanticVectorCallback, "semvec")
            parser.add_argument(
                "--knowledge", type=str | None, default=None,
                help="after fit, export the learned vectors to this knowledge file",
            )
            parser.set_defaults({
                "model": {"class_path": "lightning_semvec.models.ImageClassifier"},
                "data": {"class_path": "lightning_semvec.data.DigitsDataModule"},
                "semvec.layers": ["net.features.*", "net.classifier.3"],
            })

        def after_fit(self) -> None:
            path = self.config[self.subcommand].get("knowledge")
            if path:
                semvec = next(
                    c for c in self.trainer.callbacks if isinstance(c, SemanticVectorCallback)
                )
                print(f"Knowledge file: {semvec.export_knowledge(path)}")

    with _argv_for_lightning_cli():
        SemvecFitCLI(
            LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
            args=["fit", *args], parser_kwargs={"fit": {"epilog": FIT_EXAMPLES}},
            save_config_kwargs={"overwrite": True},
        )


def _distill_cli(args: Sequence[str]) -> None:
    from lightning.pytorch import LightningDataModule
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from lightning_semvec.distillation import StaticDistillationModule

    class SemvecDistillCLI(LightningCLI):
        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.set_defaults({"data": {"class_path": "lightning_semvec.data.DigitsDataModule"}})

    with _argv_for_lightning_cli():
        SemvecDistillCLI(
            StaticDistillationModule, LightningDataModule, subclass_mode_data=True,
            args=["fit", *args], parser_kwargs={"fit": {"epilog": DISTILL_EXAMPLES}},
            save_config_kwargs={"overwrite": True},
        )


@contextmanager
def _argv_for_lightning_cli() -> Iterator[None]:
    """LightningCLI warns when given ``args`` while ``sys.argv`` has arguments of its own."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def _small_parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"semvec {name}", description=COMMANDS[name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if name == "demo":
        parser.add_argument("--epochs", type=int, default=10, help="teacher epochs (default 10)")
        parser.add_argument("--student-epochs", type=int, default=30,
                            help="epochs of each student (default 30)")
        parser.add_argument("--out", default="semvec_runs", help="output folder (default semvec_runs)")
        parser.add_argument("--no-progress-bar", action="store_true", help="hide progress bars")
        parser.epilog = "examples:\n  semvec demo\n  semvec demo --epochs 3 --out /tmp/semvec_runs\n"
    elif name == "report":
        parser.add_argument("knowledge", help="a knowledge file (.semvec.safetensors)")
        parser.add_argument("out", help="folder to write the report into")
        parser.add_argument("--log-dir", "--logdir", dest="logdir", default=None,
                            help="a TensorBoard log dir whose projector files add per-neuron statistics")
        parser.epilog = ("examples:\n  semvec report semvec_runs/demo.semvec.safetensors report/\n"
                         "  semvec report teacher.semvec.safetensors report/ --log-dir lightning_logs\n")
    elif name == "export":
        parser.add_argument("checkpoint", help="a Lightning .ckpt saved with the callback")
        parser.add_argument("out", help="the knowledge file to write (.semvec.safetensors)")
        parser.add_argument("--key", default=None, help="the callback's state_key, if several")
        parser.add_argument("--trust-checkpoint", action="store_true",
                            help="allow objects other than tensors (only for checkpoints you trust)")
        parser.epilog = ("examples:\n  semvec export lightning_logs/version_0/checkpoints/last.ckpt "
                         "teacher.semvec.safetensors\n")
    return parser


def _run_small(name: str, args: Sequence[str]) -> int:
    parsed = _small_parser(name).parse_args(args)
    if name == "demo":
        from lightning_semvec.demo import main as demo_main

        demo_main(epochs=parsed.epochs, out_dir=parsed.out, progress_bar=not parsed.no_progress_bar,
                  student_epochs=parsed.student_epochs)
    elif name == "report":
        from lightning_semvec.report import write_report

        print(f"Report: {write_report(parsed.knowledge, parsed.out, log_dir=parsed.logdir)}")
    else:
        from lightning_semvec.checkpoint_export import knowledge_from_checkpoint

        knowledge = knowledge_from_checkpoint(parsed.checkpoint, parsed.key, parsed.trust_checkpoint)
        print(f"Knowledge file: {knowledge.save(parsed.out)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``semvec`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(TOP_HELP)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"semvec: error: unknown command {command!r}; choose one of: "
              f"{', '.join(COMMANDS)} (semvec --help).", file=sys.stderr)
        return 2
    try:
        if command == "fit":
            _fit_cli(rest)
        elif command == "distill":
            _distill_cli(rest)
        else:
            return _run_small(command, rest)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    except (ValueError, TypeError, FileNotFoundError, KeyError, RuntimeError) as err:
        # Bad input gets one clear line, not a traceback.
        message: Any = err.args[0] if err.args else err
        print(f"semvec {command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
