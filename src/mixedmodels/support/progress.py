"""A light progress display for long fits: evaluations, objective, elapsed time.

Silent unless asked (``progress=True``); even then nothing shows until the fit
has run for ``delay`` seconds, and the display is refreshed at most every
``interval`` seconds, so short fits print nothing and long ones pay for a few
string formats. In a Jupyter notebook the display is an updating output cell;
elsewhere it is one line on standard error rewritten in place.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

__all__ = ["FitProgress"]


def _in_notebook() -> bool:
    """Return True inside a Jupyter kernel (not a plain IPython terminal)."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()  # type: ignore[attr-defined]
    except AttributeError:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


class FitProgress:
    """Callback ``(evaluations, best objective)`` for the optimizers.

    Parameters
    ----------
    label : str
        What is being fitted, shown first.
    delay : float
        Seconds before anything is shown.
    interval : float
        Minimum seconds between refreshes.
    stream : text stream, optional
        Where the terminal display goes (standard error by default).
    clock : callable, optional
        Time source (for tests).
    notebook : bool, optional
        Force the notebook (True) or terminal (False) display; detected if None.
    """

    def __init__(
        self,
        label: str = "fitting",
        delay: float = 1.0,
        interval: float = 0.25,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
        notebook: bool | None = None,
    ):
        self.label = label
        self.delay = delay
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.notebook = _in_notebook() if notebook is None else notebook
        self.start = clock()
        self.shown = False
        self._last = -float("inf")
        self._state = (0, float("nan"))
        self._handle = None

    def __call__(self, evaluations: int, objective: float) -> None:
        """Record the optimizer's state; refresh the display when it is due.

        Parameters
        ----------
        evaluations : int
            Objective evaluations so far.
        objective : float
            The best objective so far.
        """
        self._state = (evaluations, objective)
        now = self.clock()
        if now - self.start < self.delay or now - self._last < self.interval:
            return
        self._last = now
        self._show(now)

    def text(self, now: float | None = None) -> str:
        """Return the display line: evaluations, objective and elapsed seconds.

        Parameters
        ----------
        now : float, optional
            The clock's time to measure the elapsed time to (read now if None).
        """
        evaluations, objective = self._state
        elapsed = (self.clock() if now is None else now) - self.start
        return (
            f"{self.label}: {evaluations} evaluations, objective {objective:.6f}, "
            f"{elapsed:.1f} s"
        )

    def _show(self, now: float) -> None:
        line = self.text(now)
        if self.notebook:
            from IPython.display import display

            if self._handle is None:
                self._handle = display({"text/plain": line}, raw=True, display_id=True)
            else:
                self._handle.update({"text/plain": line}, raw=True)
        else:
            self.stream.write("\r" + line)
            self.stream.flush()
        self.shown = True

    def close(self) -> None:
        """Show the final state (only if anything was shown) and end the line."""
        if not self.shown:
            return
        self._show(self.clock())
        if not self.notebook:
            self.stream.write(" done\n")
            self.stream.flush()
