"""Shared library of the functions: nothing model- or function-specific lives here."""
