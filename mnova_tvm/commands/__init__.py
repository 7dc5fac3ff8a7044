"""Thin CLI front-ends: argument parsing and printing; the work lives in the library modules."""
