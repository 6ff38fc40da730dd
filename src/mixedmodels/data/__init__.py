"""Data sources: where the rows of a model come from.

In memory, :func:`mixedmodels.spec.frame.build_model_frame` reads a pandas (or
polars) frame whole. Partitioned data (a Dask DataFrame, Parquet files) are
never gathered: :mod:`mixedmodels.data.specification` decides the model's
specification with the same ``spec`` functions on a small frame holding every
level, and :mod:`mixedmodels.data.dask` sums each partition's cross-products
(:class:`~mixedmodels.linalg.augmented.CrossProducts`) in map-reduce passes.
Both give the linear algebra the same thing: a model frame and the
cross-products of ``[Z X y]``.
"""
