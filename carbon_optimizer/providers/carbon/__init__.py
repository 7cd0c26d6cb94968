"""The carbon half of the data wing: sources of carbon intensity, their cache, the priority chain.

Mirror of `providers/prices/`: one adapter per live source (`electricitymaps.py`, ...), the
bundled data (`offline.py`), the cache (`cache.py`, over the shared `providers/tiered.py` and
`providers/store.py`), the per-zone priority chain ending in bundled data (`chain.py`) and the
composition the app's runtime calls (`stack.py`). Importing it does no I/O.
"""
