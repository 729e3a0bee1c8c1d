"""The Redis database the tests that share counters across workers use (flushed around each)."""

REDIS_URL = "redis://127.0.0.1:6379/15"
