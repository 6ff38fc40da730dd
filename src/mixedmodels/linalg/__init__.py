"""Linear algebra: the systems the fits factor, and their compiled kernels.

The blocked augmented system of lmer, the dense system of small models, the
blocked PWLS system of glmer, and their compiled kernels.
"""
