"""The random-effects covariance structures and the terms that hold them."""

from __future__ import annotations

import pickle

import numpy as np

import mixedmodels as mm
from mixedmodels.covariance import CovarianceStructure, Unstructured


def test_unstructured_is_lme4s_lower_triangle():
    cov = Unstructured(3)
    assert isinstance(cov, CovarianceStructure) and cov.ntheta == 6
    rows, cols = cov.theta_rows_cols()
    np.testing.assert_array_equal(rows, [0, 1, 2, 1, 2, 2])
    np.testing.assert_array_equal(cols, [0, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(cov.lower_bounds(), [0, -np.inf, -np.inf, 0, -np.inf, 0])
    np.testing.assert_array_equal(cov.factor(cov.start()), np.eye(3))
    lam = cov.factor(np.arange(1.0, 7.0))
    np.testing.assert_array_equal(lam, [[1, 0, 0], [2, 4, 0], [3, 5, 6]])
    np.testing.assert_array_equal(cov.theta_scale(np.array([1.0, 10.0, 100.0])),
                                  [1, 10, 100, 10, 100, 100])
    assert cov.theta_names("g", ["(Intercept)", "x", "z"])[:2] == ["g.(Intercept)", "g.x.(Intercept)"]


def test_unstructured_pickles_to_the_shared_layout():
    cov = pickle.loads(pickle.dumps(Unstructured(2)))
    assert cov.k == 2 and cov.rows is Unstructured(2).rows


def test_terms_delegate_to_their_structure(sleep):
    m = mm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    (term,) = m.frame.terms
    assert isinstance(term.covariance, Unstructured) and term.covariance.k == 2
    assert term.ntheta == 3
    assert m.theta.index.tolist() == [
        "Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days",
    ]
    np.testing.assert_array_equal(m.lambdas(m.theta_vector)[0], term.covariance.factor(m.theta_vector))
