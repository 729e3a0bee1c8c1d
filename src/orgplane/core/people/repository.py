"""People's SQL that does not belong to one use case: the mapping of unique violations, and the
member search behind SCIM's filters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError

from orgplane.core.errors import Conflict


@contextmanager
def unique(message: str) -> Iterator[None]:
    """A unique violation inside the block (a concurrent writer inserted the same user,
    membership, role name or email first, after this transaction's own check) is a 409.

    The transaction is not usable after it (PostgreSQL aborts it), so the 409 ends it."""
    try:
        yield
    except IntegrityError:
        raise Conflict(message) from None
