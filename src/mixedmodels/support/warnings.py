"""Warnings that name the user's line.

A warning raised deep inside a fit (a singular fit, a non-positive-definite
Hessian) would otherwise point at the package's own code; :func:`warn_caller`
points it at the first caller outside the package.
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["warn_caller"]

# the package's root folder: frames inside it are not the user's
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def warn_caller(message: str, category: type[Warning]) -> None:
    """Warn with the location of the first caller outside this package.

    So the warning names the user's line however deep inside the fit it arose.
    """
    level, frame = 2, sys._getframe(1)  # stacklevel 2 is the frame that called this
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
