"""The progress display: silent for short fits and by default, a rewritten line
on the stream once a fit runs past the delay."""

import io
import itertools

import mixedmodels as mm
from mixedmodels.support.progress import FitProgress


def test_nothing_shown_before_the_delay():
    stream = io.StringIO()
    clock = itertools.count(0.0, 0.1).__next__  # 0.1 s per call
    monitor = FitProgress("fit", delay=5.0, stream=stream, clock=clock, notebook=False)
    for i in range(1, 10):
        monitor(i, 100.0 - i)
    monitor.close()
    assert stream.getvalue() == ""


def test_line_rewritten_after_the_delay_and_closed():
    stream = io.StringIO()
    clock = itertools.count(0.0, 1.0).__next__  # 1 s per call
    monitor = FitProgress("fit", delay=2.0, interval=0.0, stream=stream, clock=clock,
                          notebook=False)
    for i in range(1, 6):
        monitor(i, 10.0 / i)
    monitor.close()
    out = stream.getvalue()
    assert out.startswith("\rfit: ")
    assert "5 evaluations, objective 2.000000" in out
    assert out.endswith(" done\n")


def test_fit_with_progress_matches_silent_fit(capsys):
    d = mm.datasets.load("sleepstudy")
    a = mm.lmer("Reaction ~ Days + (Days | Subject)", d)
    b = mm.lmer("Reaction ~ Days + (Days | Subject)", d, progress=True)
    assert a.reml_criterion == b.reml_criterion
    assert capsys.readouterr().err == ""  # a fit this short shows nothing


def test_glmer_progress_counts_every_stage(monkeypatch):
    """glmer's stages (nAGQ = 0, then two (θ, β) searches) report one running count."""
    from mixedmodels.models.glmm import model as glmm

    seen = []

    class Recorder:
        def __init__(self, label):
            self.label = label

        def __call__(self, evaluations, objective):
            seen.append((evaluations, objective))

        def close(self):
            seen.append("closed")

    monkeypatch.setattr(glmm, "FitProgress", Recorder)
    d = mm.datasets.load("cbpp")
    m = mm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", d, progress=True)
    counts = [c for c, _ in seen[:-1]]
    assert seen[-1] == "closed"
    assert counts == list(range(1, m.optsum.evaluations + 1))
    assert seen[-2][1] == min(v for _, v in seen[-20:-1])  # the best value reported last
