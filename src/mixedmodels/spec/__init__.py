"""Specification: from a formula and a DataFrame to the model frame the models fit.

The path, module by module:

* ``tokens`` -> ``formula`` (with ``guard``, the allow-list of what a formula
  may evaluate): the text parsed into a response, a fixed part, offsets and
  random-effects terms;
* ``checks`` and ``columns``: the columns the formula uses, checked against
  the data and read once, incomplete rows dropped; ``levels``: factor codes;
* ``matrix`` and ``coding``: model matrices of one formula side, contrasts
  and R's column names;
* ``response``, ``fixed`` (coding and rank) and ``random`` (one
  :class:`~mixedmodels.spec.random.ReTerm` per term, holding its
  :mod:`~mixedmodels.covariance` structure);
* ``frame``: :func:`~mixedmodels.spec.frame.build_model_frame` puts them
  together into a :class:`~mixedmodels.spec.frame.ModelFrame`;
* ``newdata``: the fitted encodings applied again to new rows (predictions).
"""
