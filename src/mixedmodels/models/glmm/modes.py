"""What PIRLS leaves at (θ, β) (:class:`Modes`) and how it fails (:class:`PirlsError`).

Both are shared by the numpy and the compiled steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixedmodels.exceptions import DataError
from mixedmodels.linalg.pwls import BlockedFactor

__all__ = ["PIRLS_FAILURES", "PIRLS_MAXIT", "STEP_HALVINGS", "Modes", "PirlsError", "c_array"]

# lme4's PIRLS iteration limit and step halvings (its ``maxit``, ``maxstephalfit``).
PIRLS_MAXIT = 100
STEP_HALVINGS = 20


class PirlsError(DataError):
    """PIRLS could not find the conditional modes (the model is degenerate there)."""


# the message of each failure status (also the compiled loop's status codes)
PIRLS_FAILURES = {
    1: "the penalised weighted least-squares system is not positive definite",
    2: "PIRLS produced a non-finite deviance",
    3: "PIRLS step halving failed to reduce the deviance",
}


@dataclass
class Modes:
    """The state PIRLS leaves at (θ, β).

    Attributes
    ----------
    u : ndarray
        The spherical conditional modes.
    beta : ndarray
        β found with them (empty when β was held fixed).
    eta, mu : ndarray
        Linear predictor and mean.
    factor : BlockedFactor
        The factor of the last step's penalised system (at the weights it
        started from).
    pdev : float
        The penalised deviance.
    iterations : int
        The PIRLS steps taken.
    """

    u: np.ndarray
    beta: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    factor: BlockedFactor  # of the last PWLS step (at the weights it started from)
    pdev: float
    iterations: int

    def ldL2(self) -> float:
        """Return log det(L)² of the last step's factor."""
        return self.factor.ldL2()


def c_array(a: np.ndarray) -> np.ndarray:
    """Return a C-ordered float array (no copy when it is one already)."""
    return np.ascontiguousarray(a, dtype=float)
