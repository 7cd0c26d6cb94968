"""Route modules: optimisation, catalog/price lookups, health and readiness."""
