"""Presentation of fitted models: summary text, coefficient tables, tidy frames."""
