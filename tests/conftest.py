"""Session-wide test environment.

Every app the tests build opens the savings ledger; point its embedded SQLite database at a
throw-away directory instead of the user's data directory.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("CARBON_OPTIMIZER_DATABASE__DATA_DIR", tempfile.mkdtemp(prefix="co-test-ledger-"))
