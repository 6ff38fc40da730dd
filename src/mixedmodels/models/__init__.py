"""Model kinds, one subpackage each, on the shared base in base.

``base`` (:class:`~mixedmodels.models.base.RandomEffectsModel`: θ, λ,
singularity, inference methods), ``lmm`` (lmer) and ``glmm`` (glmer). A new
kind is a subpackage here and one :func:`~mixedmodels.api.register` call in
:mod:`mixedmodels.api`.
"""
