"""What the callback does with validation data: held-out fidelity, per-layer metrics, figures.

The modules: ``options`` (:class:`AnalysisOptions`), ``_validation`` (``ValidationAnalysis``,
the callback's validation-time work from epoch start to export), ``batches`` (reading a
validation batch: labels, images, number of classes), ``layer_analysis`` (the metrics one layer
streams over an analysed epoch, and ``LayerResult``), ``_finishing`` (the vectors finished at
the end of fit), ``figures`` (matplotlib figures of a layer's vectors), ``projector_export``
(one export of every layer to TensorBoard's projector, and the entry it opens on) and
``_export`` (an analysed epoch written through a ``TensorBoardLogger``).

Example:
    >>> AnalysisOptions(log_every_n_epochs=2).log_every_n_epochs
    2
"""

from lightning_semvec.analysis.options import AnalysisOptions, LabelFn

__all__ = ["AnalysisOptions", "LabelFn"]
