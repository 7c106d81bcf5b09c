"""The modules that moved into folders in 0.2, still importable by their old path for one release.

``import lightning_semvec.semantic_vectors`` (or ``from lightning_semvec.figures import ...``)
imports the module at its new path, warns once with a ``FutureWarning`` that names it, and
binds the same module object to the old name, so ``monkeypatch`` and ``isinstance`` see one
module. As Lightning's ``_graveyard`` does, but through an import hook, so no moved module is
imported before someone asks for it.

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     from lightning_semvec.figures import pca_map
    >>> pca_map.__module__, "lightning_semvec.analysis.figures" in str(caught[0].message)
    ('lightning_semvec.analysis.figures', True)
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

__all__ = ["MOVED_MODULES", "install_moved_module_aliases"]

# old module (0.1) -> its home from 0.2; removed in 0.3
MOVED_MODULES = {
    "lightning_semvec.activation_gather": "lightning_semvec.callback._gather",
    "lightning_semvec.analysis_export": "lightning_semvec.analysis._export",
    "lightning_semvec.analysis_options": "lightning_semvec.analysis.options",
    "lightning_semvec.callback_state": "lightning_semvec.callback._state",
    "lightning_semvec.checkpoint_export": "lightning_semvec.callback.checkpoint",
    "lightning_semvec.checks": "lightning_semvec._utils.checks",
    "lightning_semvec.cli_embed": "lightning_semvec.cli.embed",
    "lightning_semvec.demo": "lightning_semvec.cli.demo",
    "lightning_semvec.embedding_pass": "lightning_semvec.embedding._pass",
    "lightning_semvec.figures": "lightning_semvec.analysis.figures",
    "lightning_semvec.joint_embedding": "lightning_semvec.embedding.joint_embedding",
    "lightning_semvec.joint_space": "lightning_semvec.knowledge.joint_space",
    "lightning_semvec.layer_analysis": "lightning_semvec.analysis.layer_analysis",
    "lightning_semvec.layers": "lightning_semvec.capture.layers",
    "lightning_semvec.neurons": "lightning_semvec.capture.readout",
    "lightning_semvec.projector_export": "lightning_semvec.analysis.projector_export",
    "lightning_semvec.projector_joint": "lightning_semvec.projector.joint",
    "lightning_semvec.report_matching": "lightning_semvec.report.matching",
    "lightning_semvec.semantic_vectors": "lightning_semvec.vectors.semantic_vectors",
    "lightning_semvec.validation_analysis": "lightning_semvec.analysis._validation",
    "lightning_semvec.validation_batches": "lightning_semvec.analysis.batches",
}


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, new_name: str) -> None:
        self.new_name = new_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.new_name} in lightning_semvec 0.2 and the old path goes in"
            f" 0.3: import from {self.new_name} (or the package root) instead.",
            FutureWarning,
            stacklevel=2,
        )
        return importlib.import_module(self.new_name)

    def exec_module(self, module: ModuleType) -> None:
        """The module at its new path has run already."""


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new_name = MOVED_MODULES.get(fullname)
        if new_name is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader(new_name))


def install_moved_module_aliases() -> None:
    """Put the finder of moved modules on ``sys.meta_path`` (once per interpreter)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
