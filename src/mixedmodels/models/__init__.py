"""Model kinds, one subpackage each, on the shared base in base."""
