"""The ``semvec`` command line. Library code never imports this package.

The modules: ``_main`` (:func:`main`: the command table, one-line errors, exit statuses),
``_small_commands`` (``demo``, ``report``, ``export`` and ``embed``, each parsed by
jsonargparse from one typed function), ``_lightning`` (the LightningCLI programs behind
``semvec fit`` and ``semvec distill``), ``_data_names`` (``--data glyphs`` and the other
short names), ``embed`` (``semvec embed``: a knowledge file, a
report and projector files for a trained checkpoint) and ``demo`` (``semvec demo``).

Importing it imports neither torch nor Lightning: each command imports what it uses.
"""

from lightning_semvec.cli._main import main

__all__ = ["main"]
