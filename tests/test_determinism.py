"""The same call on the same machine gives bit-identical results, however busy
the machine is: the BLAS thread plan depends on the problem's size and the
core count only (``_threads.auto_thread_plan``)."""

import inspect
import os
import subprocess
import sys
import time

import numpy as np

import mixedmodels as mm
from mixedmodels.support import threads as _threads

# InstEval's ML fit (the reference case lmer_insteval_ml): its dense block
# (~1,160 rows) is in the range where the factorisations get extra threads
FIT = (
    "import mixedmodels as mm\n"
    "m = mm.lmer('y ~ 1 + service + (1|s) + (1|d) + (1|dept)', mm.datasets.load('InstEval'), reml=False)\n"
    "print(m.optsum.blas_threads, [float(v).hex() for v in list(m.fixef) + list(m.theta)])\n"
)


def _fit_in_subprocess() -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", FIT], capture_output=True, text=True, env=env, check=True)
    return out.stdout


def test_the_thread_plan_is_a_function_of_size_and_cores_only():
    assert list(inspect.signature(_threads.auto_thread_plan).parameters) == ["block_size", "cores"]
    assert not hasattr(_threads, "current_load")


def test_a_busy_machine_does_not_change_the_fit():
    quiet = _fit_in_subprocess()
    cores = os.cpu_count() or 1
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores + 1)]
    try:
        time.sleep(0.5)  # the spinning processes show in /proc/loadavg
        loaded = _fit_in_subprocess()
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    assert loaded == quiet


def test_the_fit_records_a_plan_from_its_size():
    insteval = mm.datasets.load("InstEval")
    m = mm.lmer("y ~ 1 + service + (1|s) + (1|d) + (1|dept)", insteval, reml=False)
    assert m.optsum.blas_threads == _threads.auto_thread_plan(m.system.dense_size)
    # lme4's estimates (reference case lmer_insteval_ml)
    np.testing.assert_allclose(np.asarray(m.fixef), [3.28258096047564, -0.0925885421424825], rtol=1e-4)
