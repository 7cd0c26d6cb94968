"""HTTP edge: pydantic schemas, routes, middleware and the one domain-error → HTTP table."""
