"""``python -m lightning_semvec ARGS`` is ``semvec ARGS`` (where the console script is not on PATH)."""

import sys

from lightning_semvec.cli._main import main

sys.exit(main())
