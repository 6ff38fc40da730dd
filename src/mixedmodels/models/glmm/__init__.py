"""Generalised linear mixed models (lme4's glmer)."""
