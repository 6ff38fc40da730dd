"""What predictions for new data share, in the models and in inference.

Which random effects a prediction includes (``re_form``) and where new rows
fall among a random-effects term's levels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import PredictionError

__all__ = ["include_random", "level_positions"]


def include_random(re_form: str | None) -> bool:
    """Return whether predictions include the random effects.

    They do for ``re_form`` None and do not for ``"~0"`` (or ``"0"``, ``"NA"``,
    ``"~-1"``); any other ``re_form`` raises a :class:`PredictionError`.
    """
    if re_form is None:
        return True
    text = str(re_form).replace(" ", "")
    if text in ("~0", "0", "NA", "~-1"):
        return False
    raise PredictionError(
        f"re_form {re_form!r} is not supported: use None (all random effects) or '~0' (none)"
    )


def level_positions(term: Any, nd: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Return where each row of ``nd`` falls among ``term``'s levels, and its label.

    Positions are -1 for unseen or missing levels
    (:meth:`mixedmodels.spec.random.ReTerm.level_positions`); the second array
    holds the rows' level labels. A :class:`PredictionError` names a missing
    grouping column.
    """
    missing = [g for g in term.spec.group if g not in nd.columns]
    if missing:
        raise PredictionError(
            f"newdata has no grouping column {missing[0]!r} needed by term "
            f"{term.spec.text}; use re_form='~0' for population predictions"
        )
    return term.level_positions(nd)
