"""What Satterthwaite's and Kenward-Roger's methods ask of a model.

That it is a fitted linear mixed model, a cache on it for their per-model
results, and the BLAS thread plan of its fit.
"""

from __future__ import annotations

from typing import Any

from mixedmodels.exceptions import ModelSpecError

__all__ = ["model_cache", "require_lmm", "thread_plan"]


def require_lmm(model: Any, what: str) -> None:
    """Check that ``model`` is a fitted linear mixed model (an lmer fit).

    Raises the model's not-fitted error, or :class:`ModelSpecError` naming
    ``what`` (the method asked for) and the alternatives for other kinds.
    """
    model.require_fit()
    if getattr(model, "model_kind", None) != "lmer" or not hasattr(model, "system"):
        raise ModelSpecError(
            f"{what} is defined for linear mixed models (lmer fits), not for a "
            f"{getattr(model, 'model_kind', type(model).__name__)} model: use "
            "ddf='asymptotic' (z tests) or likelihood-ratio tests (mixedmodels.anova)"
        )


def model_cache(model: Any) -> dict:
    """Return the dict on ``model`` holding what these methods compute once per fit.

    The model's ``inference_cache`` (made on first use; a refit starts
    without it).
    """
    return model.inference_cache


def thread_plan(model: Any) -> tuple[Any, Any]:
    """Return the BLAS threads the fit would use.

    One thread for small dense blocks: OpenBLAS threads spinning on busy cores
    cost far more than they save. Models without a thread plan get ``(1, None)``.
    """
    plan = getattr(model, "blas_thread_plan", None)
    if plan is None:
        return 1, None
    try:
        return plan("auto")
    except Exception:  # noqa: BLE001 - a thread plan is an optimisation only
        return 1, None

