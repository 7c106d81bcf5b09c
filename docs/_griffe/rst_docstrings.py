"""A griffe extension that lets mkdocstrings read this package's docstrings.

The docstrings are Google style with a few reStructuredText habits that also read well in a
terminal (``help()``): ``:class:`~pkg.Name``` roles, ``Example:`` headings (griffe only knows
``Examples:``), literal blocks introduced by ``::`` or ``.. code-block::`` and
```text <url>`_`` links. Left alone, Markdown renders doctest output such as ``['a', 'b']``
as link references (warnings under ``mkdocs build --strict``) and the roles as raw text. This
extension rewrites each docstring, in the documentation build only, before griffe parses it:

- ``Example:`` becomes ``Examples:``, so ``>>>`` lines become code blocks;
- a role becomes an optional cross-reference: a link where the target is documented, plain
  code otherwise (names are resolved in the docstring's own scope, as Python would);
- ``::`` and ``.. code-block::`` introductions lose the marker (the indented block below is
  a Markdown code block already), an indented line that is one ````literal```` loses its
  backticks (it is a code block too), and links become Markdown links.

The package's source is never changed. Enabled in ``mkdocs.yml`` under the python handler's
``extensions``.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj):`(?P<tilde>~?)(?P<target>[^`]+)`"
)
_EXAMPLE_HEADING = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", re.MULTILINE)
_CODE_BLOCK_DIRECTIVE = re.compile(r"^[ \t]*\.\. code-block::[^\n]*\n", re.MULTILINE)
_LITERAL_MARKER = re.compile(r"(?<=\S)::[ \t]*$", re.MULTILINE)
_RST_LINK = re.compile(r"`(?P<text>[^`<]+?)\s*<(?P<url>[a-z]+://[^>]+)>`_")
# An indented line that is one inline literal: Markdown shows it as a code block already.
_INDENTED_LITERAL = re.compile(r"^(?P<indent>[ \t]{4,})``(?P<code>[^`]+)``[ \t]*$", re.MULTILINE)


def _resolve(obj: griffe.Object, target: str) -> str:
    """The full dotted path of ``target`` as written in ``obj``'s docstring (best effort)."""
    if target.startswith("lightning_semvec."):
        return target
    head, _, rest = target.partition(".")
    try:
        resolved = obj.resolve(head)
    except Exception:  # noqa: BLE001 - an unresolved name stays as written
        return target
    return f"{resolved}.{rest}" if rest else resolved


def _role_to_ref(obj: griffe.Object, match: re.Match[str]) -> str:
    target = match["target"].strip()
    shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
    identifier = html.escape(_resolve(obj, target), quote=True)
    code = f"<code>{html.escape(shown)}</code>"
    return f'<autoref identifier="{identifier}" optional>{code}</autoref>'


def rewrite(obj: griffe.Object, text: str) -> str:
    """The Markdown-friendly form of one docstring."""
    text = _EXAMPLE_HEADING.sub(r"\g<indent>Examples:", text)
    text = _CODE_BLOCK_DIRECTIVE.sub("", text)
    text = _LITERAL_MARKER.sub(":", text)
    text = _RST_LINK.sub(r"[\g<text>](\g<url>)", text)
    text = _INDENTED_LITERAL.sub(r"\g<indent>\g<code>", text)
    return _ROLE.sub(lambda m: _role_to_ref(obj, m), text)


class RstDocstrings(griffe.Extension):
    """Rewrite every docstring once the package's object tree is complete."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj, obj.docstring.value)
