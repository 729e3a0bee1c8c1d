"""A batch's attempts to one endpoint, as its failing streak sees them: the last success in the
batch ends a streak, the failures after it start one (``delivery.record`` writes what this
decides, per endpoint, in one transaction)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from orgplane.core.webhooks.delivery import Sent, _streak
from orgplane.core.webhooks.sender import Outcome

START = datetime(2026, 12, 8, tzinfo=UTC)


def attempt(second: int, status: int | None) -> Sent:
    outcome = Outcome(status, None if status == 200 else "HTTP 500", 1, None)
    claimed = SimpleNamespace(id=second, webhook_id=1, attempts=1)
    return Sent(claimed, "org.updated", START + timedelta(seconds=second), outcome)


def test_the_last_success_ends_the_streak() -> None:
    assert _streak([attempt(0, 500), attempt(1, 200)]) is None
    assert _streak([attempt(1, 200), attempt(0, 500)]) is None  # in any order of finishing


def test_failures_after_the_last_success_start_one() -> None:
    later = [attempt(2, 500), attempt(3, None)]
    assert _streak([attempt(0, 500), attempt(1, 200), *later]) == later
    assert _streak([attempt(0, 500)]) == [attempt(0, 500)]
