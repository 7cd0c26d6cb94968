"""Integration tests: real redis-server processes and a local stub upstream (marker `integration`)."""
