"""The user-facing functions and the registry of model kinds.

Every kind of model the package fits is one :class:`ModelKind` in
:data:`KINDS`: the name users call (R's function name, ``"lmer"``), where its
entry function and model class live, and the R function it follows. The
package's ``mm.lmer``/``mm.glmer`` and the command line find models here, so a
new kind (``lme``, ``gls``, ``geeglm``, ``glmmtmb`` ...) is a subpackage under
``models/`` and one :func:`register` call below; nothing else compares kind
names. Entry points are imported on first use, so ``import mixedmodels``
stays light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from mixedmodels.exceptions import ArgumentError

__all__ = ["KINDS", "ModelKind", "fit", "model_kind", "register"]


@dataclass(frozen=True)
class ModelKind:
    """One kind of model.

    Attributes
    ----------
    name : str
        The function users call (``mm.<name>``), R's name where there is one.
    entry : str
        ``"module:function"`` of the function that builds and fits the model.
    model_class : str
        ``"module:Class"`` of the model (exported as ``mm.<Class>``).
    follows : str
        The R function whose results it reproduces (``"lme4::lmer"``).
    description : str
        One line, for listings.
    class_name : str
        The model class's name (the end of ``model_class``).
    """

    name: str
    entry: str
    model_class: str
    follows: str
    description: str

    @property
    def class_name(self) -> str:
        """The model class's name."""
        return self.model_class.rpartition(":")[2]

    def function(self) -> Callable[..., Any]:
        """Return the entry function (imported on first use)."""
        return _load(self.entry)

    def cls(self) -> type:
        """Return the model class (imported on first use)."""
        return _load(self.model_class)


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


KINDS: dict[str, ModelKind] = {}


def register(kind: ModelKind) -> ModelKind:
    """Add a model kind to :data:`KINDS` (its name must be new)."""
    if kind.name in KINDS:
        raise ArgumentError(f"a model kind named {kind.name!r} is registered already")
    KINDS[kind.name] = kind
    return kind


def model_kind(name: str) -> ModelKind:
    """Return the registered kind called ``name``; an ArgumentError lists the kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise ArgumentError(
            f"unknown model kind {name!r}; the kinds are: {', '.join(sorted(KINDS))}"
        ) from None


def fit(kind: str, formula: str, data: Any, **options: Any) -> Any:
    """Fit a model of the registered ``kind``.

    ``fit("lmer", formula, data)`` is ``mm.lmer(formula, data)``; ``options``
    go to the kind's entry function.
    """
    return model_kind(kind).function()(formula, data, **options)


register(ModelKind(
    name="lmer",
    entry="mixedmodels.models.lmm.entry:lmer",
    model_class="mixedmodels.models.lmm.model:LinearMixedModel",
    follows="lme4::lmer",
    description="linear mixed model (REML or ML), in memory or on Dask",
))
register(ModelKind(
    name="glmer",
    entry="mixedmodels.models.glmm.model:glmer",
    model_class="mixedmodels.models.glmm.model:GeneralizedLinearMixedModel",
    follows="lme4::glmer",
    description="generalised linear mixed model (Laplace or adaptive Gauss-Hermite)",
))
register(ModelKind(
    name="gls",
    entry="mixedmodels.models.gls.model:gls",
    model_class="mixedmodels.models.gls.model:GeneralizedLeastSquares",
    follows="nlme::gls",
    description="generalised least squares with nlme's residual correlation and variance structures",
))


def exported() -> dict[str, Callable[[], Any]]:
    """Return the package-level names the registry provides, as loaders.

    They are each kind's function and model class (``mm.lmer``,
    ``mm.LinearMixedModel`` ...).
    """
    names: dict[str, Callable[[], Any]] = {}
    for kind in KINDS.values():
        names[kind.name] = kind.function
        names[kind.class_name] = kind.cls
    return names
