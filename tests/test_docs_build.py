"""The documentation builds with warnings as errors, and its API page covers the public names.

``mkdocs build --strict`` fails on a broken link, a missing page, an anchor that does not exist
or a docstring that mkdocstrings cannot render, so a change that breaks the docs fails the
README's test command (which CI runs). It needs the ``docs`` packages, which the ``test`` extra
includes.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Modules whose ``__all__`` is the public API; each name must be rendered by docs/api.md.
PUBLIC_MODULES = [
    "lightning_semvec",
    "lightning_semvec.knowledge",
    "lightning_semvec.errors",
    "lightning_semvec.distillation",
    "lightning_semvec.functional",
    "lightning_semvec.metrics",
    "lightning_semvec.data",
    "lightning_semvec.models",
    "lightning_semvec.projector",
    "lightning_semvec.analysis.figures",
    "lightning_semvec.report.html",
    "lightning_semvec.knowledge.joint_space",
    "lightning_semvec.report.matching",
    "lightning_semvec.projector.joint",
]


def _rendered_objects() -> tuple[set[str], set[int]]:
    """The ``::: target`` lines of docs/api.md, and the ids of the objects they render.

    A rendered module renders its public members too, so its members count as rendered.
    """
    text = (ROOT / "docs" / "api.md").read_text("utf-8")
    targets = set(re.findall(r"^::: *([\w.]+)\s*$", text, flags=re.MULTILINE))
    ids = set()
    for target in targets:
        try:
            obj = importlib.import_module(target)
        except ImportError:
            parent, _, attribute = target.rpartition(".")
            obj = getattr(importlib.import_module(parent), attribute)
        ids.add(id(obj))
        if isinstance(obj, types.ModuleType):
            names = getattr(obj, "__all__", [n for n in vars(obj) if not n.startswith("_")])
            ids.update(id(getattr(obj, n)) for n in names)
    return targets, ids


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="needs the docs extra: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings_handlers.python", reason="needs mkdocstrings[python]")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "api" / "index.html").is_file()


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_api_page_renders_every_public_name(module_name):
    module = importlib.import_module(module_name)
    targets, rendered = _rendered_objects()
    missing = [
        name
        for name in getattr(module, "__all__", [])
        if not name.startswith("__")
        and f"{module_name}.{name}" not in targets
        and module_name not in targets
        # classes and functions count wherever they are rendered (a re-export is the same
        # object); constants only under their own name or with their module
        and not (callable(getattr(module, name)) and id(getattr(module, name)) in rendered)
    ]
    assert not missing, (
        f"docs/api.md renders none of {module_name}.{missing}: add a '::: {module_name}.<name>' "
        "line (or render its module)."
    )
