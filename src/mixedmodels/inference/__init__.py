"""Inference for fitted mixed models.

Denominator degrees of freedom (Satterthwaite, Kenward-Roger), F and
likelihood-ratio tests, confidence intervals (Wald, profile, parametric
bootstrap), marginal means, R² and ICC.

The modules here take a fitted model and return pandas objects; the model
classes expose the common ones as methods (``m.coef_table(ddf=...)``,
``m.anova()``, ``m.confint()``, ...).
"""
