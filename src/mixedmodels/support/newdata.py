"""What predictions for new data share, in the models and in inference: which
random effects a prediction includes (``re_form``) and where new rows fall
among a random-effects term's levels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mixedmodels.exceptions import PredictionError

__all__ = ["include_random", "level_positions"]


def include_random(re_form: str | None) -> bool:
    """Whether predictions include the random effects (``re_form`` None) or
    not (``"~0"``, ``"NA"``).
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
    """Where each row of ``nd`` falls among ``term``'s levels (-1: unseen or
    missing; :meth:`mixedmodels.spec.random.ReTerm.level_positions`) and the
    rows' level labels; an error names a missing grouping column.
    """
    missing = [g for g in term.spec.group if g not in nd.columns]
    if missing:
        raise PredictionError(
            f"newdata has no grouping column {missing[0]!r} needed by term "
            f"{term.spec.text}; use re_form='~0' for population predictions"
        )
    return term.level_positions(nd)
