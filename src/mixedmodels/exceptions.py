"""Exception and warning classes of :mod:`mixedmodels`.

Every error raised for bad input is a subclass of :class:`MixedModelsError`,
itself a :class:`ValueError`, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "SeparationWarning",
    "MixedModelsError",
    "FormulaError",
    "DataError",
    "ModelSpecError",
    "ArgumentError",
    "FamilyError",
    "PredictionError",
    "MixedModelsWarning",
    "SingularFitWarning",
    "RankDeficiencyWarning",
    "MissingDataWarning",
    "ConvergenceWarning",
    "NonIntegerResponseWarning",
    "RefitWarning",
]


class MixedModelsError(ValueError):
    """Base class of every error this package raises for bad input."""


class FormulaError(MixedModelsError):
    """A model formula cannot be parsed or names something that does not exist.

    Parameters
    ----------
    message : str
        What is wrong.
    formula : str, optional
        The formula text; with ``position`` the message shows a caret under it.
    position : int, optional
        0-based character offset of the problem in ``formula``.

    Attributes
    ----------
    formula : str or None
        The formula text, when given.
    position : int or None
        The offset of the problem in it, when given.
    """

    def __init__(self, message: str, formula: str | None = None, position: int | None = None):
        self.formula = formula
        self.position = position
        if formula is not None and position is not None:
            # a formula written over several lines: show the line holding the caret
            line_start = formula.rfind("\n", 0, position) + 1
            line_end = formula.find("\n", position)
            line = formula[line_start : len(formula) if line_end < 0 else line_end]
            message = f"{message}\n  {line}\n  {' ' * (position - line_start)}^"
        super().__init__(message)


class DataError(MixedModelsError):
    """The data cannot be used as given (missing column, infinite value, empty data ...)."""


class ModelSpecError(MixedModelsError):
    """The model is not identifiable as specified (e.g. one level per observation)."""


class ArgumentError(ModelSpecError, TypeError):
    """A function was called with an argument it does not take.

    Often lme4's spelling, e.g. ``REML=``; the message says what to write
    instead. Also a :class:`TypeError`, what Python raises for an unexpected
    keyword.
    """


class FamilyError(MixedModelsError):
    """A family or link is unknown or unsupported, or the response does not fit the family."""


class PredictionError(MixedModelsError):
    """``newdata`` for prediction holds something the fitted model cannot handle."""


class MixedModelsWarning(UserWarning):
    """Base class of the warnings of this package."""


class SingularFitWarning(MixedModelsWarning):
    """The optimum lies on the boundary: a variance is zero or a correlation is +-1."""


class RankDeficiencyWarning(MixedModelsWarning):
    """Fixed-effect columns were dropped because they are linear combinations of others."""


class MissingDataWarning(MixedModelsWarning):
    """Rows with missing values in used columns were dropped."""


class ConvergenceWarning(MixedModelsWarning):
    """The optimizer stopped without a clean convergence signal."""


class SeparationWarning(MixedModelsWarning):
    """Binomial data are (quasi-)completely separated by some fixed effects.

    Their maximum-likelihood estimates are infinite.
    """


class NonIntegerResponseWarning(MixedModelsWarning):
    """A count response (Poisson counts, binomial successes) is not a whole number.

    R warns "non-integer #successes in a binomial glm!" and fits anyway; its
    binomial AIC rounds the successes, while ``dpois`` gives a non-integer count
    zero probability, so a Poisson log-likelihood is ``-inf`` (AIC ``inf``).
    """


class RefitWarning(MixedModelsWarning):
    """REML fits were refitted by maximum likelihood before a likelihood-ratio test.

    lme4's message: "refitting model(s) with ML (instead of REML)".
    """
