"""Pure domain core: value types, window maths, energy model, instance selection, scoring.

Nothing here does I/O or imports fastapi, starlette, httpx, redis, pydantic-settings or asyncio;
time is always an argument. `tests/domain/test_purity.py` walks the imports to keep it that way.
"""
