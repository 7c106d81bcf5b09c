"""Internal helpers shared across the package (not public API).

The modules: ``checks`` (argument checks: one message format, one error class),
``logging_steps`` (the rule for the steps a Trainer's loggers write), ``indices`` (evenly
spaced indices for figures and projector files of wide layers), ``warning_cache``
(``WarningCache``: an owner's once-only messages) and ``model_guard``
(``preserved_model``: a model run through a Trainer left exactly as it was) and ``files``
(temporary siblings named after their process, and the clean-up of a killed write's).
"""
