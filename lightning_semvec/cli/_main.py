"""The ``semvec`` command line.

``semvec fit`` and ``semvec distill`` are :class:`~lightning.pytorch.cli.LightningCLI` programs,
so configs, ``--print_config``, YAML files (``--config``) and dotted overrides work as in any
Lightning project. ``semvec demo``, ``semvec report`` and ``semvec export`` are small
commands around the library, parsed by jsonargparse from one typed function each
(:mod:`lightning_semvec.cli._small_commands`).

A :class:`~lightning_semvec.errors.SemvecError` (the user's input was wrong) prints one line,
``semvec <command>: error: <message>``, and exits with status 2, as bad arguments do; any other
exception is a bug and keeps its traceback. So does a bad argument or config key of ``fit`` and
``distill``, with "did you mean ...?" for a misspelt one (:mod:`lightning_semvec.cli._lightning`).

While a command runs (:func:`quiet_lightning`), two lines Lightning prints on every run and that
say nothing about it are left out: the tips that advertise ``litlogger`` and ``litmodels``
(``rank_zero_info`` messages starting "💡 Tip:", dropped by a :class:`logging.Filter` on
Lightning's ``rank_zero`` loggers) and torch's ``FutureWarning`` that Lightning's
``utilities/_pytree.py`` still checks ``isinstance(treespec, LeafSpec)`` (a warnings filter on
that message). Both are restored when the command returns; code that imports the package sees
Lightning as it is.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from lightning_semvec.cli._small_commands import SMALL_COMMANDS, run_small_command
from lightning_semvec.errors import SemvecError

COMMANDS = {
    "fit": "train any LightningModule + LightningDataModule with the semantic vector callback",
    "distill": "static distillation of a student from a knowledge file (no teacher)",
    **{name: command.summary for name, command in SMALL_COMMANDS.items()},
}

TOP_HELP = "usage: semvec COMMAND [options]\n\n" + "\n".join(
    f"  {name:<8} {text}" for name, text in COMMANDS.items()
) + """

Each command has --help with examples. Start with:  semvec demo
"""


def _fit_cli(args: Sequence[str]) -> None:
    from lightning_semvec.cli._lightning import SemvecFitCLI

    with _argv_for_lightning_cli():
        SemvecFitCLI(list(args))


def _distill_cli(args: Sequence[str]) -> None:
    from lightning_semvec.cli._lightning import SemvecDistillCLI

    with _argv_for_lightning_cli():
        SemvecDistillCLI(list(args))


@contextmanager
def _argv_for_lightning_cli() -> Iterator[None]:
    """LightningCLI warns when given ``args`` while ``sys.argv`` has arguments of its own."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


#: The loggers of Lightning's ``rank_zero_info`` (the fabric one until ``lightning.pytorch`` is
#: imported and takes over).
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
#: Lightning's advertising tips ("💡 Tip: For seamless cloud logging ... litlogger").
TIP_PREFIX = "\N{ELECTRIC LIGHT BULB} Tip:"
#: torch's FutureWarning about ``lightning/pytorch/utilities/_pytree.py``'s ``LeafSpec`` check.
PYTREE_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class _NoTips(logging.Filter):
    """Drops Lightning's "💡 Tip: ..." records (litlogger, litmodels)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TIP_PREFIX)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Leave out Lightning's litlogger/litmodels tips and the ``LeafSpec`` deprecation warning
    while the block runs (see the module docstring); put everything back after.

    Example:
        >>> import logging
        >>> with quiet_lightning():
        ...     logging.getLogger(_RANK_ZERO_LOGGERS[0]).filters != []
        True
        >>> logging.getLogger(_RANK_ZERO_LOGGERS[0]).filters
        []
    """
    no_tips = _NoTips()
    loggers = [logging.getLogger(name) for name in _RANK_ZERO_LOGGERS]
    for logger in loggers:
        logger.addFilter(no_tips)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=PYTREE_WARNING, category=FutureWarning)
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(no_tips)


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
        with quiet_lightning():
            if command == "fit":
                _fit_cli(rest)
            elif command == "distill":
                _distill_cli(rest)
            else:
                run_small_command(command, rest)
    except SystemExit as exit_:  # --help (0) and bad arguments (2) from the parsers
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    except SemvecError as err:
        # Only the user's input: a bug in the library (any other exception) keeps its traceback.
        print(f"semvec {command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
