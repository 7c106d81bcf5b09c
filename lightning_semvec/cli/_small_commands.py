"""The small ``semvec`` commands (``demo``, ``report``, ``export``, ``embed``), parsed by jsonargparse.

Each command's options come from one typed function, its signature and docstring, as
``semvec fit``'s come from the classes' ``__init__`` through LightningCLI: ``semvec demo`` from
:func:`lightning_semvec.cli.demo.main`, ``semvec report`` from
:func:`lightning_semvec.report.html.write_report`, ``semvec export`` from
:func:`lightning_semvec.callback.checkpoint.knowledge_from_checkpoint`, ``semvec embed`` from
:func:`lightning_semvec.cli.embed.embed_model`. A new command is one
:class:`SmallCommand` in :data:`SMALL_COMMANDS`.

jsonargparse names options after parameters (``--student_epochs``). Every option is also
accepted with dashes (``--student-epochs``), a ``bool`` option alone means true
(``--trust-checkpoint``) and ``--no-...`` means false (``--no-progress-bar``): these are the
spellings of the earlier argparse command line, so commands written for it still run.

A misspelt option is one line naming the closest one, as in ``semvec fit``
(``semvec demo: error: unknown option `--epoch`: did you mean `--epochs`?``); other errors
(a wrong value, a missing argument) keep jsonargparse's usage, which shows the positional
arguments' order.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast, get_type_hints

from jsonargparse import ArgumentParser, DefaultHelpFormatter

from lightning_semvec.cli._parse_errors import unknown_option_error

__all__ = ["SMALL_COMMANDS", "SmallCommand", "command_parser", "run_small_command"]


@dataclass(frozen=True)
class SmallCommand:
    """One small ``semvec`` command.

    Attributes:
        summary: one line, shown by ``semvec --help`` and as the command's description.
        examples: the ``examples:`` block at the end of the command's ``--help``.
        run: parses the command's arguments (without the command name) and does its work.
    """

    summary: str
    examples: str
    run: Callable[[Sequence[str]], None] = field(repr=False)


class _HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help (types and defaults) that keeps the examples' line breaks, with the
    docstrings' reStructuredText literals (````digits````) shown as plain ```digits```."""

    def _expand_help(self, action: argparse.Action) -> str:
        return super()._expand_help(action).replace("``", "`")


class _SmallCommandParser(ArgumentParser):
    """jsonargparse's parser, with one line for an unknown option (and the closest one)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        unknown = unknown_option_error(self, message)
        if unknown is None or not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        print(f"{self.prog}: error: {unknown}", file=sys.stderr)
        sys.exit(2)


def command_parser(
    name: str,
    function: Callable[..., Any],
    spellings: Mapping[str, Sequence[str]] | None = None,
    skip: set[str | int] | None = None,
) -> ArgumentParser:
    """The parser of the small command ``name``: ``function``'s parameters as options.

    Required parameters become positional arguments, the others ``--options``; their help is
    the docstring's ``Args:`` entry. ``spellings`` adds option strings by parameter name
    (``{"out_dir": ["--out"]}``) to those every option gets (see the module docstring);
    ``skip`` names parameters a command line cannot fill (a tensor), left at their defaults.
    """
    command = SMALL_COMMANDS[name]
    parser = _SmallCommandParser(
        prog=f"semvec {name}", description=command.summary, epilog=command.examples,
        formatter_class=_HelpFormatter,
        # No prefixes (``--out`` for ``--out_dir``): a new option would silently take them over.
        allow_abbrev=False,
    )
    parser.add_function_arguments(function, as_group=False, as_positional=True, skip=skip)
    flags = {name for name, hint in get_type_hints(function).items() if hint is bool}
    _add_spellings(parser, spellings or {}, flags)
    return parser


def _add_spellings(
    parser: ArgumentParser, extra: Mapping[str, Sequence[str]], flags: set[str]
) -> None:
    """Add the dashed and ``extra`` spellings to the options of ``parser``, and let the
    ``flags`` (``bool`` parameters) be given alone or as ``--no-...``."""
    for action in list(parser._actions):
        if not action.option_strings or action.dest == "help":
            continue
        dashed = [s.replace("_", "-") for s in action.option_strings if "_" in s]
        for option in (*dashed, *extra.get(action.dest, ())):
            # argparse has no public way to give an existing action another name; this is what
            # add_argument("--a", "--b") itself records.
            cast(list[str], action.option_strings).append(option)  # a list at run time
            parser._option_string_actions[option] = action
        if action.dest in flags:
            action.nargs, action.const = "?", True  # "--trust-checkpoint" alone means true
            negated = f"no_{action.dest}"
            parser.add_argument(
                f"--{negated}", f"--{negated.replace('_', '-')}", dest=action.dest,
                action="store_const", const=False, default=argparse.SUPPRESS,
                help=f"same as --{action.dest} false",
            )


def _parse(parser: ArgumentParser, args: Sequence[str]) -> dict[str, Any]:
    """``args`` parsed and type-checked by ``parser``, as keyword arguments."""
    return parser.parse_args(list(args)).as_dict()


def _run_demo(args: Sequence[str]) -> None:
    from lightning_semvec.cli.demo import main as demo

    demo(**_parse(command_parser("demo", demo, {"out_dir": ["--out"]}), args))


def _run_report(args: Sequence[str]) -> None:
    from lightning_semvec.report.html import write_report

    # confusion is a tensor of the user's own held-out predictions: the Python API takes it.
    parser = command_parser("report", write_report, {"log_dir": ["--logdir"]}, skip={"confusion"})
    print(f"Report: {write_report(**_parse(parser, args))}")


def _run_export(args: Sequence[str]) -> None:
    from lightning_semvec.callback.checkpoint import (
        check_output_path,
        knowledge_from_checkpoint,
    )

    parser = command_parser("export", knowledge_from_checkpoint)
    parser.add_argument("out", type=str, help="the knowledge file to write (.semvec.safetensors)")
    flag = parser.add_argument("--overwrite", type=bool, default=False, help="replace the file if it exists")
    flag.nargs, flag.const = "?", True  # "--overwrite" alone means true, as the other flags
    options = _parse(parser, args)
    # Before the checkpoint is read: a wrong output path should not cost a large load first.
    out = check_output_path(options.pop("out"), options.pop("overwrite"))
    print(f"Knowledge file: {knowledge_from_checkpoint(**options).save(out)}")


def _run_embed(args: Sequence[str]) -> None:
    from lightning_semvec.cli.embed import embed_model

    path = embed_model(**_parse(command_parser("embed", embed_model, {"out_dir": ["--out"]}), args))
    print(f"Knowledge file: {path}\nReport: {path.parent / 'report' / 'index.html'}\n"
          f"Projector: tensorboard --logdir {path.parent / 'projector'}")


SMALL_COMMANDS: dict[str, SmallCommand] = {
    "demo": SmallCommand(
        "teacher, plain student and static student on the embedded digits (no download)",
        "examples:\n  semvec demo\n  semvec demo --epochs 3 --out /tmp/semvec_runs\n",
        _run_demo,
    ),
    "report": SmallCommand(
        "an offline HTML report (figures + per-neuron table) from a knowledge file",
        "examples:\n  semvec report semvec_runs/version_0/demo.semvec.safetensors report/\n",
        _run_report,
    ),
    "export": SmallCommand(
        "a knowledge file from a checkpoint's callback state",
        "examples:\n  semvec export 'lightning_logs/version_0/checkpoints/epoch=9-step=200.ckpt' "
        "teacher.semvec.safetensors\n  (the checkpoint name semvec fit printed; given a folder, "
        "export lists the checkpoints in it)\n",
        _run_export,
    ),
    "embed": SmallCommand(
        "semantic vectors of a model already trained (a checkpoint or torchvision weights)",
        "examples:\n  semvec embed 'lightning_logs/version_0/checkpoints/epoch=9-step=200.ckpt' "
        "digits 'net.features.*,net.classifier.1' out/ --trust-checkpoint\n"
        "  semvec embed resnet18 photos/ layer4,avgpool out/ --weights resnet18.pt\n"
        "  (photos/ holds one sub-folder of images per class)\n"
        "  semvec embed lightning_logs/version_0/checkpoints/*.ckpt digits net.classifier.1 out/ "
        "--compare lightning_logs/version_1/checkpoints/*.ckpt --names teacher,student\n"
        "  (a semvec fit teacher and its semvec distill student in one space, each rebuilt as its "
        "own class: the\n  student's layers are student.<layer>; a matching summary here, a "
        "Matching section in the report)\n",
        _run_embed,
    ),
}


def run_small_command(name: str, args: Sequence[str]) -> None:
    """Run the small command ``name`` on ``args``; bad arguments exit (status 2) with usage."""
    SMALL_COMMANDS[name].run(args)
