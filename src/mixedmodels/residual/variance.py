"""nlme's variance functions (``varFunc``): the diagonal A of V = A R A.

Each class takes nlme's arguments (``value=`` in the natural scale, ``form=``
as formula text, ``fixed=``) and answers, for parameters in nlme's
unconstrained scale, nlme's ``varWeights``: per row the multiplier 1/sd
(relative to σ). The model's log-likelihood adds ``sum(log(weights))``
(:meth:`VarianceFunction.log_det`).

The caller evaluates the formula: it passes the covariate (a data column, or
the fitted values for ``fitted(.)``) and the strata (the ``| g`` column) as
arrays, one entry per row. Strata levels are learnt once, in nlme's order
(order of first appearance), by :meth:`VarianceFunction.initialize`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Mapping, Sequence, Union

import numpy as np
import pandas as pd

from mixedmodels.exceptions import DataError, ModelSpecError

#: ``value=``/``fixed=`` as nlme takes them: one number, or numbers by name.
Values = Union[None, float, Mapping[str, float]]


def parse_form(form: str) -> tuple[str | None, str | None]:
    """Split nlme's one-sided variance formula into covariate and strata text.

    Parameters
    ----------
    form : str
        ``"~ 1 | Sex"``, ``"~ age"``, ``"~ fitted(.)"`` or ``"~ age | Sex"``.

    Returns
    -------
    tuple of (str or None, str or None)
        The covariate expression (None for ``1``) and the strata expression
        (None without ``|``).
    """
    text = form.strip()
    if not text.startswith("~"):
        raise ModelSpecError(f"variance formula {form!r} must be one-sided, starting with '~'")
    covariate, _, strata = text[1:].partition("|")
    covariate, strata = covariate.strip(), strata.strip()
    if not covariate:
        raise ModelSpecError(f"variance formula {form!r} has no covariate (write '~ 1 | g' for none)")
    return (None if covariate == "1" else covariate), (strata or None)


def _as_named(values: Values, argument: str, cls: str) -> dict[str, float] | float | None:
    """Return ``values`` as a dict by name, one float, or None."""
    if values is None:
        return None
    if isinstance(values, Mapping):
        return {str(name): float(v) for name, v in values.items()}
    array = np.atleast_1d(np.asarray(values, dtype=float))
    if array.size != 1:
        raise ModelSpecError(f"{argument}= of {cls} must be one number or numbers by stratum name")
    return float(array[0])


class VarianceFunction(ABC):
    """A variance function of nlme: per-row 1/sd multipliers of the residuals.

    Parameters
    ----------
    form : str
        nlme's one-sided formula text (see :func:`parse_form`).

    Attributes
    ----------
    form : str
        The formula text.
    covariate_name : str or None
        The covariate expression the caller evaluates (``"fitted(.)"`` means
        the model's fitted values).
    strata_name : str or None
        The strata expression the caller evaluates, if any.
    levels : list of str or None
        The strata levels in nlme's order, once :meth:`initialize` has run.
    """

    def __init__(self, form: str):
        self.form = form
        self.covariate_name, self.strata_name = parse_form(form)
        self.levels: list[str] | None = None

    # -- strata ---------------------------------------------------------------
    def initialize(self, strata: Sequence | None = None) -> VarianceFunction:
        """Learn the strata levels (nlme's ``Initialize``) and return self.

        Parameters
        ----------
        strata : array-like or None
            The strata of the fitting data, one per row (ignored without
            ``| g`` in the formula).

        Returns
        -------
        VarianceFunction
            ``self``, initialized.
        """
        if self.strata_name is None:
            self.levels = None
        else:
            if strata is None:
                raise DataError(f"{type(self).__name__}(form={self.form!r}) needs the strata {self.strata_name!r}")
            self.levels = [str(level) for level in pd.unique(np.asarray(strata).astype(str))]
        self._after_levels()
        return self

    def _after_levels(self) -> None:
        """Check ``value=``/``fixed=`` against the strata levels (a hook)."""

    def _stratum_index(self, strata: Sequence | None) -> np.ndarray:
        """Return, per row, the position of its stratum among :attr:`levels`."""
        if self.levels is None:
            raise ModelSpecError(f"{type(self).__name__} must be initialized with the fitting data's strata first")
        if strata is None:
            raise DataError(f"{type(self).__name__}(form={self.form!r}) needs the strata {self.strata_name!r}")
        labels = np.asarray(strata).astype(str)
        index = pd.Index(self.levels).get_indexer(labels)
        if (index < 0).any():
            unseen = list(pd.unique(labels[index < 0]))
            raise DataError(
                f"{type(self).__name__}: stratum {', '.join(map(repr, unseen))} of {self.strata_name!r} "
                f"was not in the data of the fit (known strata: {', '.join(map(repr, self.levels))})"
            )
        return index

    def _require_levels(self) -> list[str]:
        if self.levels is None:
            raise ModelSpecError(f"{type(self).__name__} must be initialized with the fitting data's strata first")
        return self.levels

    def _check_names(self, names: Sequence[str], argument: str) -> None:
        """Refuse stratum names in ``value=``/``fixed=`` that the data lacks."""
        levels = self._require_levels()
        unknown = [name for name in names if name not in levels]
        if unknown:
            raise ModelSpecError(
                f"{type(self).__name__}: {argument}= names unknown strata {', '.join(map(repr, unknown))} "
                f"(strata of {self.strata_name!r}: {', '.join(map(repr, levels))})"
            )

    # -- parameters -----------------------------------------------------------
    @property
    def n_params(self) -> int:
        """The number of free (not fixed) parameters."""
        return len(self.param_names)

    @property
    @abstractmethod
    def param_names(self) -> list[str]:
        """The names nlme gives the free parameters (``coef(x)``'s names)."""

    @abstractmethod
    def start(self) -> np.ndarray:
        """Return the free parameters' start in the unconstrained scale (``value=`` or nlme's default)."""

    @abstractmethod
    def unconstrained(self, natural: np.ndarray) -> np.ndarray:
        """Map free parameters from the natural scale to nlme's unconstrained scale."""

    @abstractmethod
    def natural(self, unconstrained: np.ndarray) -> np.ndarray:
        """Map free parameters from nlme's unconstrained scale to the natural scale."""

    @abstractmethod
    def weights(self, params: np.ndarray, covariate: np.ndarray | None = None, strata: Sequence | None = None) -> np.ndarray:
        """Return nlme's ``varWeights``: per row, 1/sd relative to σ.

        Parameters
        ----------
        params : ndarray
            The free parameters, unconstrained scale.
        covariate : ndarray or None
            The covariate per row (the fitted values for ``fitted(.)``).
        strata : array-like or None
            The stratum per row.

        Returns
        -------
        ndarray
            The weights, one per row.
        """

    def log_det(self, params: np.ndarray, covariate: np.ndarray | None = None, strata: Sequence | None = None) -> float:
        """Return ``sum(log(weights))``, the term nlme's logLik adds."""
        return float(np.sum(np.log(self.weights(params, covariate, strata))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(form={self.form!r})"


def _covariate(vf: VarianceFunction, covariate: np.ndarray | None) -> np.ndarray:
    if covariate is None:
        raise DataError(f"{vf!r} needs the covariate {vf.covariate_name!r}")
    return np.asarray(covariate, dtype=float)


class varIdent(VarianceFunction):  # noqa: N801 - nlme's name
    """Different variances by stratum: sd ratio δ_s to the first stratum.

    Parameters
    ----------
    value : float or dict, optional
        Start ratios (> 0): one number for every free stratum but the first,
        or ratios by stratum name (then the one stratum not named is the
        reference, as in nlme).
    form : str
        ``"~ 1 | g"``.
    fixed : dict, optional
        Ratios held fixed, by stratum name.
    """

    def __init__(self, value: Values = None, form: str = "~ 1", fixed: Mapping[str, float] | None = None):
        super().__init__(form)
        self.value = _as_named(value, "value", "varIdent")
        self.fixed = _as_named(fixed, "fixed", "varIdent")
        if isinstance(self.fixed, float):
            raise ModelSpecError("fixed= of varIdent must give ratios by stratum name")
        self._check_positive(self.value, "value")
        self._check_positive(self.fixed, "fixed")
        self.order: list[str] = []

    @staticmethod
    def _check_positive(values: dict | float | None, argument: str) -> None:
        items = values.items() if isinstance(values, dict) else [("", values)] if values is not None else []
        bad = [name or str(v) for name, v in items if not v > 0]
        if bad:
            raise ModelSpecError(f"varIdent: {argument}= ratios must be > 0 (not for {', '.join(bad)})")

    def _after_levels(self) -> None:
        if self.levels is None:
            self.order = []
            return
        fixed = self.fixed or {}
        self._check_names(list(fixed), "fixed")
        free = [level for level in self.levels if level not in fixed]
        if not free:
            raise ModelSpecError("varIdent: cannot fix variances in all strata")
        if isinstance(self.value, dict) and len(self.value) > 1:
            # nlme: the reference stratum is the only one named neither in value= nor fixed=.
            self._check_names(list(self.value), "value")
            missing = [level for level in free if level not in self.value]
            if len(missing) != 1:
                raise ModelSpecError(
                    "varIdent: value= must name all strata but one (the reference) of "
                    f"{', '.join(map(repr, free))}"
                )
            free = missing + list(self.value)
        elif isinstance(self.value, dict):
            self._check_names(list(self.value), "value")
        self.order = free + list(fixed)

    @property
    def _free(self) -> list[str]:
        return [name for name in self.order[1:] if name not in (self.fixed or {})]

    @property
    def param_names(self) -> list[str]:
        """The free strata (all but the first in nlme's order and the fixed)."""
        return self._free if self.levels is not None else []

    def start(self) -> np.ndarray:
        """Return log ratios from ``value=``, else 0 (equal variances)."""
        free = self.param_names
        if isinstance(self.value, dict) and len(self.value) > 1:
            return np.log([self.value[name] for name in free])
        # nlme repeats a single value (whatever its name) for every free stratum.
        single = next(iter(self.value.values())) if isinstance(self.value, dict) else self.value
        return np.full(len(free), 0.0 if single is None else np.log(single))

    def unconstrained(self, natural: np.ndarray) -> np.ndarray:
        """Return the log of the ratios."""
        natural = np.asarray(natural, dtype=float)
        if (natural <= 0).any():
            raise ModelSpecError(f"varIdent: ratios must be > 0, got {natural.tolist()}")
        return np.log(natural)

    def natural(self, unconstrained: np.ndarray) -> np.ndarray:
        """Return the ratios exp(θ)."""
        return np.exp(np.asarray(unconstrained, dtype=float))

    def ratios(self, params: np.ndarray) -> np.ndarray:
        """Return the sd ratio of every stratum in :attr:`levels` order (the first in nlme's order is 1)."""
        by_name = dict(zip(self._free, self.natural(params)))
        by_name.update(self.fixed or {})
        by_name[self.order[0]] = 1.0
        return np.array([by_name[level] for level in self._require_levels()])

    def weights(self, params: np.ndarray, covariate: np.ndarray | None = None, strata: Sequence | None = None) -> np.ndarray:
        """Return 1/ratio of each row's stratum (all 1 without strata)."""
        if self.strata_name is None:
            return np.ones(len(strata) if strata is not None else len(_covariate(self, covariate)))
        return 1.0 / self.ratios(params)[self._stratum_index(strata)]


class _StratifiedCovariateFunction(VarianceFunction):
    """A variance function of a covariate with parameters, one per stratum if ``| g``.

    Subclasses set :attr:`names` (nlme's parameter names, e.g. ``("power",)``)
    and :attr:`defaults` (nlme's starts, natural scale).
    """

    names: tuple[str, ...] = ()
    defaults: tuple[float, ...] = ()

    def __init__(self, value: Mapping[str, Values], form: str, fixed: Mapping[str, Values] | None):
        super().__init__(form)
        if self.covariate_name is None:
            raise ModelSpecError(f"{type(self).__name__}: form {form!r} must have a covariate")
        cls = type(self).__name__
        self.value = {name: _as_named(v, "value", cls) for name, v in value.items()}
        self.fixed = {name: _as_named(v, "fixed", cls) for name, v in (fixed or {}).items()}
        unknown = [name for name in self.fixed if name not in self.names]
        if unknown:
            raise ModelSpecError(f"{cls}: fixed= names {unknown}, not among its parameters {list(self.names)}")
        for name, v in [*self.value.items(), *self.fixed.items()]:
            self._check_domain(name, v)

    def _check_domain(self, name: str, values: dict | float | None) -> None:
        """Refuse natural values outside the parameter space (a hook)."""

    def _strata(self) -> list[str]:
        return self.levels if self.levels is not None else [""]

    def _after_levels(self) -> None:
        for argument, source in (("value", self.value), ("fixed", self.fixed)):
            for name, v in source.items():
                if isinstance(v, dict):
                    if self.levels is None:
                        raise ModelSpecError(f"{type(self).__name__}: {argument}= by stratum needs '| g' in form")
                    self._check_names(list(v), argument)
                elif v is not None and self.levels is not None and argument == "fixed":
                    raise ModelSpecError(f"{type(self).__name__}: fixed= needs stratum names with '| g' in form")
        self._check_value_covers_free_strata()

    def _check_value_covers_free_strata(self) -> None:
        """Refuse several ``value=`` entries that miss a free stratum (nlme's rule)."""
        for name, v in self.value.items():
            if isinstance(v, dict) and len(v) > 1:
                free = [s for n, s in self._slots() if n == name]
                missing = [s for s in free if s not in v]
                if missing:
                    raise ModelSpecError(
                        f"{type(self).__name__}: value= for {name} by stratum misses {', '.join(map(repr, missing))}"
                    )

    def _fixed_value(self, name: str, stratum: str) -> float | None:
        v = self.fixed.get(name)
        if isinstance(v, dict):
            return v.get(stratum)
        return v

    def _slots(self) -> list[tuple[str, str]]:
        """Return (parameter, stratum) of each free parameter, nlme's order."""
        return [(name, s) for name in self.names for s in self._strata() if self._fixed_value(name, s) is None]

    @property
    def param_names(self) -> list[str]:
        """The names nlme gives: the parameter, or the stratum (``param.stratum`` if several)."""
        if self.levels is None:
            return [name for name, _ in self._slots()]
        if len(self.names) == 1:
            return [s for _, s in self._slots()]
        return [f"{name}.{s}" for name, s in self._slots()]

    def start(self) -> np.ndarray:
        """Return ``value=`` (repeated over strata if one number) or nlme's default."""
        natural = []
        for name, s in self._slots():
            v = self.value.get(name)
            if isinstance(v, dict):
                # nlme repeats one value over every free stratum, whatever its name.
                v = next(iter(v.values())) if len(v) == 1 else v.get(s)
            natural.append(self.defaults[self.names.index(name)] if v is None else v)
        return self.unconstrained(np.array(natural, dtype=float))

    def _by_row(self, params: np.ndarray, strata: Sequence | None, n: int) -> dict[str, np.ndarray]:
        """Return every natural parameter per row (free from ``params``, else fixed)."""
        table = {name: np.array([self._fixed_value(name, s) or 0.0 for s in self._strata()]) for name in self.names}
        for (name, s), v in zip(self._slots(), self.natural(params)):
            table[name][self._strata().index(s)] = v
        if self.strata_name is None:
            return {name: np.full(n, values[0]) for name, values in table.items()}
        index = self._stratum_index(strata)
        return {name: values[index] for name, values in table.items()}

    def weights(self, params: np.ndarray, covariate: np.ndarray | None = None, strata: Sequence | None = None) -> np.ndarray:
        """Return nlme's weights of the covariate for ``params``."""
        v = _covariate(self, covariate)
        if self.strata_name is not None:
            self._require_levels()
        return self._weights(self._by_row(params, strata, len(v)), v)

    @abstractmethod
    def _weights(self, par: dict[str, np.ndarray], v: np.ndarray) -> np.ndarray:
        """Return the weights given every parameter per row."""


class varPower(_StratifiedCovariateFunction):  # noqa: N801 - nlme's name
    """sd ∝ |v|^power: weights |v|^(-power).

    Parameters
    ----------
    value : float or dict, optional
        Start power (default 0), or powers by stratum.
    form : str
        ``"~ v"`` or ``"~ v | g"`` (default ``"~ fitted(.)"``).
    fixed : float or dict, optional
        Power held fixed (by stratum with ``| g``).
    """

    names = ("power",)
    defaults = (0.0,)

    def __init__(self, value: Values = None, form: str = "~ fitted(.)", fixed: Values = None):
        super().__init__({"power": value}, form, {} if fixed is None else {"power": fixed})

    def unconstrained(self, natural: np.ndarray) -> np.ndarray:
        """Return the power as is."""
        return np.asarray(natural, dtype=float).copy()

    def natural(self, unconstrained: np.ndarray) -> np.ndarray:
        """Return the power as is."""
        return np.asarray(unconstrained, dtype=float).copy()

    def _weights(self, par: dict[str, np.ndarray], v: np.ndarray) -> np.ndarray:
        # nlme takes |v|, so negative covariates are fine; a zero one is not (0^-p).
        zero = (v == 0) & (par["power"] != 0)
        if zero.any():
            raise DataError(
                f"{self!r}: covariate {self.covariate_name!r} is 0 in {int(zero.sum())} rows, where "
                "|v|^power gives a zero or infinite variance (nlme's weights become Inf or 0)"
            )
        return np.abs(v) ** (-par["power"])


class varExp(_StratifiedCovariateFunction):  # noqa: N801 - nlme's name
    """sd ∝ exp(expon·v): weights exp(-expon·v).

    Parameters
    ----------
    value : float or dict, optional
        Start ``expon`` (default 0), or by stratum.
    form : str
        ``"~ v"`` or ``"~ v | g"`` (default ``"~ fitted(.)"``).
    fixed : float or dict, optional
        ``expon`` held fixed (by stratum with ``| g``).
    """

    names = ("expon",)
    defaults = (0.0,)

    def __init__(self, value: Values = None, form: str = "~ fitted(.)", fixed: Values = None):
        super().__init__({"expon": value}, form, {} if fixed is None else {"expon": fixed})

    def unconstrained(self, natural: np.ndarray) -> np.ndarray:
        """Return ``expon`` as is."""
        return np.asarray(natural, dtype=float).copy()

    def natural(self, unconstrained: np.ndarray) -> np.ndarray:
        """Return ``expon`` as is."""
        return np.asarray(unconstrained, dtype=float).copy()

    def _weights(self, par: dict[str, np.ndarray], v: np.ndarray) -> np.ndarray:
        return np.exp(-par["expon"] * v)


class varConstPower(_StratifiedCovariateFunction):  # noqa: N801 - nlme's name
    """sd ∝ const + |v|^power: weights 1/(const + |v|^power).

    Parameters
    ----------
    const, power : float or dict, optional
        Starts (nlme's defaults: const 0.1, power 0), or by stratum.
    form : str
        ``"~ v"`` or ``"~ v | g"`` (default ``"~ fitted(.)"``).
    fixed : dict, optional
        ``{"const": ..., "power": ...}`` values held fixed.
    """

    names = ("const", "power")
    defaults = (0.1, 0.0)

    def __init__(self, const: Values = None, power: Values = None, form: str = "~ fitted(.)",
                 fixed: Mapping[str, Values] | None = None):
        super().__init__({"const": const, "power": power}, form, fixed)

    def _check_domain(self, name: str, values: dict | float | None) -> None:
        items = values.values() if isinstance(values, dict) else [values]
        if name == "const" and any(v is not None and not v > 0 for v in items):
            raise ModelSpecError(f"varConstPower: const must be > 0, got {values}")

    def _is_const(self) -> np.ndarray:
        return np.array([name == "const" for name, _ in self._slots()], dtype=bool)

    def unconstrained(self, natural: np.ndarray) -> np.ndarray:
        """Return log(const) and power as is."""
        out = np.asarray(natural, dtype=float).copy()
        const = self._is_const()
        if (out[const] <= 0).any():
            raise ModelSpecError(f"varConstPower: const must be > 0, got {out[const].tolist()}")
        out[const] = np.log(out[const])
        return out

    def natural(self, unconstrained: np.ndarray) -> np.ndarray:
        """Return exp of the log const and power as is."""
        out = np.asarray(unconstrained, dtype=float).copy()
        const = self._is_const()
        out[const] = np.exp(out[const])
        return out

    def _weights(self, par: dict[str, np.ndarray], v: np.ndarray) -> np.ndarray:
        zero = (v == 0) & (par["power"] < 0)
        if zero.any():
            raise DataError(
                f"{self!r}: covariate {self.covariate_name!r} is 0 in {int(zero.sum())} rows, where "
                "|v|^power with a negative power is infinite (nlme's weights become 0)"
            )
        return 1.0 / (par["const"] + np.abs(v) ** par["power"])


class varFixed(VarianceFunction):  # noqa: N801 - nlme's name
    """Variance proportional to a covariate: weights 1/sqrt(|v|), no parameters.

    Parameters
    ----------
    form : str
        ``"~ v"``.
    """

    def __init__(self, form: str):
        super().__init__(form)
        if self.covariate_name is None or self.strata_name is not None:
            raise ModelSpecError(f"varFixed: form {form!r} must be '~ v', a covariate without strata")

    @property
    def param_names(self) -> list[str]:
        """No parameters."""
        return []

    def start(self) -> np.ndarray:
        """Return no parameters."""
        return np.empty(0)

    def unconstrained(self, natural: np.ndarray) -> np.ndarray:
        """Return no parameters."""
        return np.empty(0)

    def natural(self, unconstrained: np.ndarray) -> np.ndarray:
        """Return no parameters."""
        return np.empty(0)

    def weights(self, params: np.ndarray, covariate: np.ndarray | None = None, strata: Sequence | None = None) -> np.ndarray:
        """Return 1/sqrt(|v|)."""
        v = _covariate(self, covariate)
        if (v == 0).any():
            raise DataError(f"{self!r}: covariate {self.covariate_name!r} is 0 in {int((v == 0).sum())} rows (variance 0)")
        return 1.0 / np.sqrt(np.abs(v))


class varComb(VarianceFunction):  # noqa: N801 - nlme's name
    """The product of variance functions (nlme's ``varComb``).

    ``initialize`` and ``weights`` take their ``strata`` and ``covariate`` as
    sequences with one entry per component.

    Parameters
    ----------
    *components : VarianceFunction
        The variance functions combined, named A, B, ... as in nlme.
    """

    def __init__(self, *components: VarianceFunction):
        if not components or not all(isinstance(c, VarianceFunction) for c in components):
            raise ModelSpecError("varComb: all arguments must be variance functions")
        self.components = list(components)
        self.form = " * ".join(c.form for c in components)
        self.covariate_name = self.strata_name = None
        self.levels = None

    def initialize(self, strata: Sequence | None = None) -> varComb:
        """Initialize every component with its own strata (a sequence, one per component)."""
        strata = [None] * len(self.components) if strata is None else strata
        for component, s in zip(self.components, strata):
            component.initialize(s)
        return self

    def _splits(self) -> np.ndarray:
        return np.cumsum([c.n_params for c in self.components])[:-1]

    @property
    def param_names(self) -> list[str]:
        """The names nlme gives: ``A.power`` etc."""
        return [f"{chr(65 + i)}.{name}" for i, c in enumerate(self.components) for name in c.param_names]

    def start(self) -> np.ndarray:
        """Return the components' starts, concatenated."""
        return np.concatenate([c.start() for c in self.components])

    def unconstrained(self, natural: np.ndarray) -> np.ndarray:
        """Map each component's slice."""
        parts = np.split(np.asarray(natural, dtype=float), self._splits())
        return np.concatenate([c.unconstrained(p) for c, p in zip(self.components, parts)])

    def natural(self, unconstrained: np.ndarray) -> np.ndarray:
        """Map each component's slice."""
        parts = np.split(np.asarray(unconstrained, dtype=float), self._splits())
        return np.concatenate([c.natural(p) for c, p in zip(self.components, parts)])

    def weights(self, params: np.ndarray, covariate: Sequence | None = None, strata: Sequence | None = None) -> np.ndarray:
        """Return the product of the components' weights."""
        n = len(self.components)
        covariate = [None] * n if covariate is None else covariate
        strata = [None] * n if strata is None else strata
        parts = np.split(np.asarray(params, dtype=float), self._splits())
        products = [c.weights(p, v, s) for c, p, v, s in zip(self.components, parts, covariate, strata)]
        return np.prod(products, axis=0)

    def __repr__(self) -> str:
        return f"varComb({', '.join(map(repr, self.components))})"
