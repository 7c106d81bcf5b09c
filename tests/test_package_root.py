"""The package root: its lazy names agree with ``__all__``, and the 0.1 module paths still import."""

import importlib
import subprocess
import sys

import pytest

import lightning_semvec
from lightning_semvec._graveyard import MOVED_MODULES


def test_every_public_name_resolves_and_all_lists_exactly_them():
    assert set(lightning_semvec.__all__) - {"__version__"} == set(lightning_semvec._EXPORTS)
    for name in lightning_semvec._EXPORTS:
        assert getattr(lightning_semvec, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = lightning_semvec.Nothing


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_a_moved_module_imports_by_its_old_path_with_one_warning(old):
    # a fresh interpreter: the module must not be imported already, or no warning is due
    probe = (f"import warnings, importlib; warnings.simplefilter('always')\n"
             f"with warnings.catch_warnings(record=True) as caught:\n"
             f"    warnings.simplefilter('always'); module = importlib.import_module({old!r})\n"
             f"print(module.__name__, sum(issubclass(w.category, FutureWarning) for w in caught))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == [MOVED_MODULES[old], "1"]


def test_the_old_path_is_the_same_module_object():
    with pytest.warns(FutureWarning, match="moved to lightning_semvec.knowledge.joint_space"):
        old = importlib.import_module("lightning_semvec.joint_space")
    assert old is importlib.import_module("lightning_semvec.knowledge.joint_space")
