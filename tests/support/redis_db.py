"""The Redis database the tests that share counters across workers use (flushed around each).

Each pytest-xdist worker has a database of its own (15 for the first, 14 for the next...), so
workers running side by side never flush each other's counters.
"""

import os

_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
REDIS_URL = f"redis://127.0.0.1:6379/{15 - _WORKER % 16}"
