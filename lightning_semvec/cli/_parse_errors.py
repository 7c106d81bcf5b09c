"""One-line parse errors for every ``semvec`` command, with "did you mean ...?" for a misspelt key.

jsonargparse answers a bad argument with the usage (six lines for ``semvec demo``, seventy for
``semvec fit``), a tip and the message. The ``semvec`` commands print one line instead:

* an unknown option names the closest one: ``semvec demo: error: unknown option `--epoch`: did
  you mean `--epochs`?`` (or ``see semvec demo --help`` when nothing is close);
* any other error keeps jsonargparse's explanation and says where the options are:
  ``... (options: semvec fit --help)``.

Used by ``semvec fit`` and ``semvec distill`` (:mod:`lightning_semvec.cli._lightning`) and the
small commands (:mod:`lightning_semvec.cli._small_commands`). Imports neither torch nor
Lightning: ``semvec report`` starts without them.

Example:
    >>> _closest("--epoch", {"--epochs", "--out_dir"})
    '--epochs'
    >>> _unknown_key("Unrecognized arguments: --epoch 3")
    '--epoch'
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["one_line_error", "unknown_option_error"]

_UNKNOWN_PATTERNS = (
    # --semvec.dimm 4 on the command line
    re.compile(r"nrecognized arguments: (?P<key>--?[\w.\-]+)"),
    # dims: in a config file, or a nested --semvec '{dims: 4}'
    re.compile(r"does not accept option '(?P<key>[\w.\-]+)'"),
    re.compile(r"Key '(?P<key>[\w.\-]+)' is not expected"),
)


def _command(parser: Any) -> str:
    """``"semvec fit"`` of a parser whose ``prog`` is ``"semvec fit [options]"``."""
    return str(parser.prog).split(" [options]")[0]


def one_line_error(parser: Any, message: str) -> str:
    """The parse error ``message`` of ``parser`` (a jsonargparse parser) on one line for an
    unknown key, naming the closest option; else jsonargparse's explanation of the wrong
    value and where to find the options."""
    unknown = unknown_option_error(parser, message)
    if unknown is not None:
        return unknown
    return f"{message.rstrip()}\n  (options: {_command(parser)} --help)"


def unknown_option_error(parser: Any, message: str) -> str | None:
    """``"unknown option `--x`: did you mean `--y`?"`` when ``message`` is about an unknown
    key, else ``None``."""
    key = _unknown_key(message)
    if key is None:
        return None
    options = {o for o in (*_option_strings(parser), *_class_options(message))
               if not o.endswith(".help")}
    guess = _closest(key, options)
    hint = f"did you mean `{guess}`?" if guess else f"see {_command(parser)} --help"
    return f"unknown option `{key}`: {hint}"


def _closest(key: str, options: set[str]) -> str | None:
    """The option closest to ``key``: by its last part among the options of the same group
    (``--model.wieght`` is not "close" to ``--model.model`` for sharing ``--model.``), else by the
    whole name (``--semvc.dim``)."""
    group, _, leaf = key.rpartition(".")
    siblings = {o.rpartition(".")[2]: o for o in options if o.rpartition(".")[0] == group}
    found = difflib.get_close_matches(leaf, sorted(siblings), n=1)
    if found:
        return siblings[found[0]]
    found = difflib.get_close_matches(key, sorted(options), n=1, cutoff=0.8)
    return found[0] if found else None


def _unknown_key(message: str) -> str | None:
    for pattern in _UNKNOWN_PATTERNS:
        found = pattern.search(message)
        if found:
            key = found["key"]
            return key if key.startswith("-") else f"--{key}"
    # --model.wieght: the model's class does not take the argument.
    parent = re.search(r'Parser key "(?P<parent>[\w.]+)"', message)
    option = re.search(r"Option '(?P<key>[\w.]+)' is not accepted", message)
    if parent and option:
        return f"--{parent['parent']}.{option['key']}"
    return None


def _option_strings(parser: Any) -> Iterator[str]:
    for action in parser._actions:
        yield from (s for s in action.option_strings if s.startswith("--"))
        for subparser in (getattr(action, "choices", None) or {}).values():
            if hasattr(subparser, "_actions"):
                yield from _option_strings(subparser)


def _class_options(message: str) -> Iterator[str]:
    """``--model.<argument>`` for each argument of the class in 'Problem with given class_path'."""
    parent = re.search(r'Parser key "(?P<parent>[\w.]+)"', message)
    found = re.search(r"class_path '(?P<path>[\w.]+)'", message)
    if not (parent and found):
        return
    module, _, name = found["path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        parameters = inspect.signature(cls).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return
    yield from (f"--{parent['parent']}.{name}" for name, p in parameters.items()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
