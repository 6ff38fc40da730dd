"""Linear mixed models (lme4's lmer), in memory and on Dask.

``model`` (:class:`~mixedmodels.models.lmm.model.LinearMixedModel`) with its
base classes ``criterion`` (the profiled objective and its gradient),
``fitting`` (start, search, optimum) and ``refit`` (refits, simulation);
``engine`` (which system holds the cross-products), ``starts`` (starting θ),
``options`` (the arguments shared by every entry), ``entry`` (``lmer``) and
``dask`` (the model of partitioned data).
"""
