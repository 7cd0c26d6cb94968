"""Test suite of carbon_optimizer (a package so test modules can share helpers by import)."""
