"""Start-up: each ``semvec`` command imports only what it uses (``benchmarks/startup.py`` times it)."""

import subprocess
import sys

import pytest

PROBE = """
import contextlib, io, sys
from lightning_semvec.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main({argv!r})
    except SystemExit:
        pass
print(" ".join(name for name in ("torch", "lightning", "torchvision", "torchmetrics", "matplotlib")
               if name in sys.modules))
"""


def imported_by(argv: list[str]) -> set[str]:
    result = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True,
                            text=True, timeout=300, check=True)
    return set(result.stdout.split())


@pytest.mark.parametrize("argv", [["--help"], ["fitt"], []], ids=["help", "misspelt", "bare"])
def test_help_and_a_misspelt_command_import_no_torch(argv):
    assert imported_by(argv) == set()


def test_import_of_the_package_imports_no_torch():
    result = subprocess.run([sys.executable, "-c", "import sys, lightning_semvec; print('torch' in sys.modules)"],
                            capture_output=True, text=True, timeout=300, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("argv", [["report", "--help"], ["export", "--help"]], ids=["report", "export"])
def test_report_and_export_do_not_import_lightning(argv):
    imported = imported_by(argv)
    assert "torch" in imported  # they use it
    assert not imported & {"lightning", "torchvision", "torchmetrics", "matplotlib"}, imported
