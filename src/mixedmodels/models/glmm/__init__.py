"""Generalised linear mixed models (lme4's glmer).

``model`` (the model class and ``glmer``), ``engine`` (PIRLS and the
Laplace / quadrature deviance), ``compiled`` (its compiled steps), ``modes``
(what PIRLS leaves), ``optimizer`` (the fit's stages), ``derivatives``
(lme4's finite differences and convergence check), ``results`` and
``prediction`` (what a fit reports), ``separation`` (complete separation).
"""
