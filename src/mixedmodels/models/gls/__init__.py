"""nlme's ``gls``: linear models with correlated, heteroscedastic residuals (issue 16)."""
