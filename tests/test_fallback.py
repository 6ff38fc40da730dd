"""The numpy path, where Numba cannot be imported or is switched off
(``MIXEDMODELS_NUMBA=0``), gives the compiled path's numbers; and the kernels
are loaded in the background, never mixed with numpy within a fit."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import mixedmodels as mm
from mixedmodels.linalg import kernels
from mixedmodels.models.glmm import compiled as glmm_compiled

pytest.importorskip("numba")  # the comparison needs both paths

INSTEVAL = "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)"
VERBAGG = "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


def _same(a, b, rtol=1e-7):
    assert a.deviance == pytest.approx(b.deviance, rel=1e-12)
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=rtol, atol=1e-10)
    np.testing.assert_allclose(a.theta, b.theta, rtol=rtol, atol=1e-10)
    np.testing.assert_allclose(a.fitted, b.fitted, rtol=1e-7)


def test_lmer_numpy_path_equals_the_compiled_one(monkeypatch):
    insteval = mm.datasets.load("InstEval")
    compiled = mm.lmer(INSTEVAL, insteval, reml=False)
    assert compiled.system.compiled
    monkeypatch.setenv("MIXEDMODELS_NUMBA", "0")
    plain = mm.lmer(INSTEVAL, insteval, reml=False)
    assert not plain.system.compiled
    _same(compiled, plain, rtol=1e-6)


@pytest.mark.parametrize("formula, data", [(CBPP, "cbpp"), (VERBAGG, "VerbAgg")])
def test_glmer_numpy_path_equals_the_compiled_one(monkeypatch, formula, data):
    frame = mm.datasets.load(data)
    compiled = mm.glmer(formula, frame, family="binomial")
    assert compiled._engine.compiled is not None
    monkeypatch.setenv("MIXEDMODELS_NUMBA", "off")
    plain = mm.glmer(formula, frame, family="binomial")
    assert plain._engine.compiled is None
    _same(compiled, plain, rtol=1e-6)


def _run(code: str, **env) -> str:
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_without_numba_every_fit_takes_the_numpy_path():
    code = (
        "import sys; sys.modules['numba'] = None  # import numba raises ImportError\n"
        "import mixedmodels as mm\n"
        f"g = mm.glmer({CBPP!r}, mm.datasets.load('cbpp'), family='binomial')\n"
        f"m = mm.lmer({INSTEVAL!r}, mm.datasets.load('InstEval'), reml=False)\n"
        "print(g._engine.compiled is None, m.system.compiled, repr(g.deviance), repr(m.deviance))\n"
    )
    none, compiled, gdev, ldev = _run(code).split()
    assert (none, compiled) == ("True", "False")
    assert float(gdev) == pytest.approx(mm.glmer(CBPP, mm.datasets.load("cbpp"), family="binomial").deviance, rel=1e-12)
    # lme4's deviance (reference case lmer_insteval_ml)
    assert float(ldev) == pytest.approx(237721.768775888, rel=1e-9)


def test_kernels_compiling_in_the_background_leave_the_fit_on_numpy(tmp_path):
    """A fresh cache (as after an install): the first fit does not wait for
    the compilation, runs on numpy; fits after it has finished use the
    kernels, with the same numbers; a later process loads them and waits."""
    code = (
        "import mixedmodels as mm\n"
        "from mixedmodels.linalg.kernels import lmm_kernels as _kernels\n"
        "data = mm.datasets.load('InstEval')\n"
        f"first = mm.lmer({INSTEVAL!r}, data, reml=False)\n"
        # the engine is dropped after a fit: rebuilt here, it decides as the fit did
        "first_compiled = first.system.compiled\n"
        "_kernels.KERNELS.wait()\n"
        f"second = mm.lmer({INSTEVAL!r}, data, reml=False)\n"
        "print(first_compiled, second.system.compiled, _kernels.KERNELS.compiled_here,"
        " repr(first.deviance), repr(second.deviance))\n"
    )
    cache = {"NUMBA_CACHE_DIR": str(tmp_path)}
    first, second, compiled_here, dev1, dev2 = _run(code, **cache).split()
    assert (first, second, compiled_here) == ("False", "True", "True")
    assert float(dev1) == pytest.approx(float(dev2), rel=1e-12)
    first, second, compiled_here, _, _ = _run(code, **cache).split()
    assert (first, second, compiled_here) == ("True", "True", "False")


def test_the_warm_up_covers_every_signature_the_engine_calls(monkeypatch):
    """After the warm-up no fit compiles anything (a missed signature would
    compile for seconds in the middle of a user's fit)."""
    from numba.core import event

    assert kernels.wait()
    compiled = []

    class Listener(event.Listener):
        def on_start(self, ev):
            compiled.append(ev.data["dispatcher"].py_func.__qualname__)

        def on_end(self, ev):
            pass

    listener = Listener()
    event.register("numba:compile", listener)
    try:
        cbpp, verbagg = mm.datasets.load("cbpp"), mm.datasets.load("VerbAgg")
        mm.glmer(CBPP, cbpp, family="binomial")
        mm.glmer("TICKS ~ YEAR + (1 | BROOD)", mm.datasets.load("grouseticks"), family="poisson")
        mm.glmer(VERBAGG, verbagg, family="binomial")
        monkeypatch.setattr(glmm_compiled, "FUSED_MAX_BLOCK", 0)  # the stepwise compiled PIRLS
        mm.glmer(VERBAGG, verbagg, family="binomial", link="probit")
        mm.lmer(INSTEVAL, mm.datasets.load("InstEval"), reml=True)
    finally:
        event.unregister("numba:compile", listener)
    assert compiled == []


def test_a_child_forked_while_kernels_compile_takes_the_numpy_path(tmp_path):
    """Bootstrap workers are forked from a process whose fit has been made:
    with the kernels still compiling elsewhere at the fork, the child has no
    thread waiting for them and must neither wait for ever nor load them."""
    code = (
        "import os\n"
        "from mixedmodels.linalg.kernels import lmm_kernels as _kernels\n"
        "assert not _kernels.KERNELS.ready()  # a fresh cache: compiling elsewhere\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0 if not _kernels.KERNELS.ready() and not _kernels.KERNELS.wait() else 1)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(os.waitstatus_to_exitcode(status), _kernels.KERNELS.wait())\n"
    )
    assert _run(code, NUMBA_CACHE_DIR=str(tmp_path)).split() == ["0", "True"]


def test_a_process_first_small_glmer_takes_the_numpy_path_the_next_ones_the_kernels():
    """A small model fits faster on numpy than the kernels load: the first
    one of a process does not wait for them (and loads nothing); the models
    after it, and its own refits, use them. The choice follows the order of
    the calls, so two processes give the same digits."""
    code = (
        "import numpy as np, mixedmodels as mm\n"
        "data = mm.datasets.load('cbpp')\n"
        f"first = mm.glmer({CBPP!r}, data, family='binomial')\n"
        "import sys; loaded = 'numba' in sys.modules\n"
        f"second = mm.glmer({CBPP!r}, data, family='binomial')\n"
        "refit = first.refit(first.frame.y[:, 0] / first.frame.y.sum(axis=1))\n"
        "print(first._engine.compiled is None, loaded, second._engine.compiled is not None,"
        " refit._engine.compiled is not None, repr(first.deviance), repr(second.deviance),"
        " repr(refit.deviance))\n"
    )
    out = _run(code).split()
    assert out[:4] == ["True", "False", "True", "True"]
    dev_first, dev_second, dev_refit = map(float, out[4:])
    # the two paths' optimizers end within the stopping rule (as in
    # test_glmer_numpy_path_equals_the_compiled_one); the refit starts at the first's θ
    assert dev_first == pytest.approx(dev_second, rel=1e-8)
    assert dev_refit == pytest.approx(dev_second, rel=1e-8)
    assert _run(code).split() == out  # the same digits in another process


def test_a_process_first_large_glmer_waits_for_the_kernels():
    code = (
        "import mixedmodels as mm\n"
        "from mixedmodels.linalg.kernels import glmm_kernels as _glmm_kernels\n"
        "_glmm_kernels.SMALL_ROWS = 10  # cbpp's 56 rows count as large\n"
        f"first = mm.glmer({CBPP!r}, mm.datasets.load('cbpp'), family='binomial')\n"
        "print(first._engine.compiled is not None)\n"
    )
    assert _run(code).split() == ["True"]
