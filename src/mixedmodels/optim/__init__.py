"""Optimisation of the profiled objectives over the covariance parameters."""
