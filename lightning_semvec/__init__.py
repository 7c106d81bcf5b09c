"""lightning_semvec: semantic vectors for the neurons of any Lightning model."""

__version__ = "0.1.0"
