"""Support used by every layer: progress reporting, BLAS thread control, checks of user arguments."""
