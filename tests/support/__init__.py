"""Importable test support (fixtures that tests and bench/ share)."""
