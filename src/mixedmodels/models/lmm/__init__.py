"""Linear mixed models (lme4's lmer), in memory and on Dask."""
