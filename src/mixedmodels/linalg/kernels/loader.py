"""When the Numba kernels are used, and how they are loaded.

They are used when Numba is importable and not switched off, and the kernels
are loaded from Numba's on-disk cache.

Compiling the kernels takes 15-20 s (once after an install or upgrade: Numba
caches them next to the modules), loading them from the cache a few tenths of a
second. The first model that could use a set of kernels starts a thread that
loads them by running the set's warm-up (tiny inputs, every signature the
engine calls). If everything comes from the cache, the model waits for it and
uses the kernels. If something has to be compiled, the thread stops and hands
the compilation to a separate Python process (no competition for this one's
interpreter lock, and it finishes filling the cache even if this process
exits first); the model does not wait and runs on the numpy path (the same
arithmetic, equal to ~1e-12). Once that process is done, the thread loads the
kernels and models built from then on use them. A model decides once, when it
is built, so a fit never mixes the two paths, and from the first process
after the compilation every fit takes the compiled path.

One exception keeps a later process's first small fit quick: importing Numba
and its first call cost 0.3-0.4 s, more than a small model takes on the numpy
path (cbpp: 26 ms against 5 ms). A model that says it is small
(``ready(small=True)``), when it is the first of its process to ask for a set,
takes the numpy path and loads nothing; the models after it (and its refits)
wait for the set. That choice follows the order of the calls, not timing: the
same script gives the same digits in every process. Numba itself is not
imported until a set loads.

``MIXEDMODELS_NUMBA=0`` in the environment switches the kernels off (the numpy
path, as where Numba cannot be imported); ``mixedmodels.linalg.kernels.wait()``
blocks until every set is ready (benchmarks, and anyone who wants the compiled
path from the first fit).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import subprocess
import sys
import threading
from typing import Callable

__all__ = ["KernelSet", "compile_set", "kernel_sets", "numba_enabled"]

_SETS: list["KernelSet"] = []


@functools.cache
def _numba_importable() -> bool:
    """Return whether Numba is installed and not blocked, without importing it.

    Importing costs 0.2 s: a process whose models take the numpy path never
    pays it. An installed
    Numba that fails to import is found by the loading thread (the set's
    ``error``), and the models take the numpy path.
    """
    if "numba" in sys.modules:
        return sys.modules["numba"] is not None
    try:
        return importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):
        return False


def numba_enabled() -> bool:
    """Return whether the kernels may be used.

    They may when Numba is importable and the environment variable
    ``MIXEDMODELS_NUMBA`` is not set to 0, false, no or off (read at every call,
    so that a test can switch the numpy path on).
    """
    if os.environ.get("MIXEDMODELS_NUMBA", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return _numba_importable()


class _MustCompile(Exception):
    """The warm-up reached a kernel missing from Numba's cache."""


class KernelSet:
    """A set of kernels, defined in ``module`` as ``KERNELS``.

    The set is made ready by ``warm_up`` in a background thread (see the
    module's docstring).

    Attributes
    ----------
    name : str
        Short name (the loading thread's name holds it).
    module : str
        The module defining the set, imported by the compiling process.
    compiled_here : bool
        Whether this process had the kernels compiled (not found in the cache).
    error : BaseException or None
        Why the set could not be loaded (the models then take the numpy path).
    """

    def __init__(self, name: str, module: str, warm_up: Callable[[], None]):
        self.name = name
        self.module = module
        self._warm_up = warm_up
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._asked = False  # whether a model has asked for the set (see ready)
        self._done = threading.Event()  # the kernels are loaded (or failed)
        self._decided = threading.Event()  # loaded, or found they must be compiled
        self.compiled_here = False  # whether this process had them compiled
        self.error: BaseException | None = None
        _SETS.append(self)

    def ready(self, small: bool = False) -> bool:
        """Return whether a model built now uses the kernels.

        True once they are loaded, and inside the warm-up itself; False without
        Numba, when switched off, or while they are being compiled.

        ``small``: the model fits faster on the numpy path than the kernels
        load (a few tenths of a second: importing Numba and its first call).
        If it is the first model of the process to ask for this set, it takes
        the numpy path and nothing is loaded (a script that fits one small
        model is done sooner); the models after it wait for the set to load.
        The choice depends on the order of the calls only, never on timing, so
        that the same calls give the same numbers.
        """
        if not numba_enabled():
            return False
        if threading.current_thread() is self._thread:
            return True
        with self._lock:
            first, self._asked = not self._asked, True
        if small and first:
            return False
        self._start()
        self._decided.wait()
        return self._done.is_set() and self.error is None

    def wait(self) -> bool:
        """Block until the kernels are ready; return whether they can be used."""
        if not numba_enabled():
            return False
        with self._lock:
            self._asked = True
        self._start()
        self._done.wait()
        return self.error is None

    def compile_here(self) -> None:
        """Run the warm-up in this thread, compiling what the cache lacks."""
        self._warm_up()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"mixedmodels-{self.name}-kernels", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        try:
            try:
                self._load(stop_at_compile=True)
            except _MustCompile:
                self.compiled_here = True
                self._decided.set()  # models stop waiting: the numpy path meanwhile
                self._compile_elsewhere()
                self._load(stop_at_compile=False)  # from the cache now
        except BaseException as err:  # noqa: BLE001 - reported through ready()
            self.error = err
        finally:
            self._done.set()
            self._decided.set()

    def _load(self, stop_at_compile: bool) -> None:
        """Run the warm-up, loading the kernels.

        With ``stop_at_compile`` it raises _MustCompile where Numba would
        compile (a load from the cache raises no compile event).
        """
        from numba.core import event

        thread, name = self._thread, self.name

        class CompileListener(event.Listener):
            def on_start(self, ev) -> None:
                if stop_at_compile and threading.current_thread() is thread:
                    raise _MustCompile(name)

            def on_end(self, ev) -> None:
                pass

        listener = CompileListener()
        event.register("numba:compile", listener)
        try:
            self._warm_up()
        finally:
            event.unregister("numba:compile", listener)

    def _compile_elsewhere(self) -> None:
        """Compile the set in a new Python process and wait for it.

        The process runs in its own session: it completes the cache even if this
        process exits first. If no process can be started, the caller compiles
        here.
        """
        # the folder holding the package (src/ or site-packages), for the new process's import path
        package_root = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 3))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        code = f"from mixedmodels.linalg.kernels.loader import compile_set; compile_set({self.module!r})"
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=os.name == "posix",
            )
        except OSError:
            return
        proc.wait()


def _after_fork_in_child() -> None:
    """Put the sets being loaded at a fork on the numpy path in the child.

    A forked child (bootstrap workers) has no loading thread, and Numba's
    compiler lock may be held by the thread that no longer exists: sets being
    loaded at the fork stay on the numpy path in the child (sets not started
    start there on demand).
    """
    for kernel_set in _SETS:
        if kernel_set._thread is not None and not kernel_set._done.is_set():
            kernel_set.error = RuntimeError("forked while the kernels were being loaded")
            kernel_set._done.set()
            kernel_set._decided.set()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def kernel_sets() -> list[KernelSet]:
    """Return the kernel sets defined so far (each kernel module registers its own)."""
    return list(_SETS)


def compile_set(module: str) -> None:
    """Compile (and so cache) the kernel set defined in ``module``.

    This is what the process started by :class:`KernelSet` runs.
    """
    importlib.import_module(module).KERNELS.compile_here()
