"""Fault suite of issue 11: each test reproduces one edge/deployment fault and pins its fix."""
