"""The offline HTML report of a knowledge file (``semvec report``).

The modules: ``html`` (:func:`write_report`: figures per layer, a table of its neurons, and
``nearest_neighbours``) and ``matching`` (the "Matching" sections of a joint knowledge: which
neuron of one model plays which role in another).
"""

from lightning_semvec.report.html import nearest_neighbours, write_report

__all__ = ["nearest_neighbours", "write_report"]
