"""Specification: formula parsing and its allow-list guard, terms, and the model frame (response, fixed-effects coding and rank, random-effects terms, NA handling)."""
