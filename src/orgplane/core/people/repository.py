"""People's SQL that does not belong to one use case: the mapping of unique violations, and the
member search behind SCIM's filters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from scim2_models.path import (
    CompareOperator,
    Comparison,
    FilterNode,
    LogicalExpr,
    LogicalOperator,
    Not,
    Present,
)
from sqlalchemy.exc import IntegrityError

from orgplane.core.errors import Conflict
from orgplane.core.people.memberships import MEMBER_COLUMNS
from orgplane.db.engine import Reader
from orgplane.models import memberships, users


@contextmanager
def unique(message: str) -> Iterator[None]:
    """A unique violation inside the block (a concurrent writer inserted the same user,
    membership, role name or email first, after this transaction's own check) is a 409.

    The transaction is not usable after it (PostgreSQL aborts it), so the 409 ends it."""
    try:
        yield
    except IntegrityError:
        raise Conflict(message) from None


# --- member search (SCIM filters) -------------------------------------------------------------

# A SCIM User attribute → the column it is shown from. Strings compare case-insensitively
# (RFC 7643: caseExact false), so each is matched in lower case; an empty profile field is
# shown as absent. ``id`` is case-exact.
_LOWER_TEXT: dict[str, Any] = {
    "username": users.c.email_normalized,
    "emails": users.c.email_normalized,
    "emails.value": users.c.email_normalized,
}
_PROFILE_TEXT: dict[str, Any] = {
    "name.givenname": users.c.first_name,
    "name.familyname": users.c.last_name,
    "title": users.c.title,
}
# What SCIM's sortBy may name, and the member column it orders by.
MEMBER_SORTS: dict[str, Any] = {
    "username": users.c.email_normalized,
    "emails.value": users.c.email_normalized,
    "name.givenname": sa.func.lower(users.c.first_name),
    "name.familyname": sa.func.lower(users.c.last_name),
}


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _text_match(column: Any, op: CompareOperator, value: str) -> Any:
    pattern = _like(value)
    if op == CompareOperator.eq:
        return column == value
    if op == CompareOperator.ne:
        return column != value
    if op == CompareOperator.co:
        return column.like(f"%{pattern}%", escape="\\")
    if op == CompareOperator.sw:
        return column.like(f"{pattern}%", escape="\\")
    if op == CompareOperator.ew:
        return column.like(f"%{pattern}", escape="\\")
    return None


def _path(node: Any) -> str:
    path = node.attr_path
    if path.uri and path.uri.lower() != "urn:ietf:params:scim:schemas:core:2.0:user":
        return ""
    return f"{path.attr}.{path.sub_attr}" if path.sub_attr else path.attr


def user_filter_clause(node: FilterNode) -> Any | None:
    """The SQL condition on ``users`` equivalent to a SCIM User filter, or None when the filter
    uses anything it does not translate (the caller then evaluates it the slow way).

    Translated: and/or/not; ``pr``; eq/ne/co/sw/ew on userName, emails(.value), id, and
    (except ``ne``) name.givenName, name.familyName, title; eq/ne on active."""
    if isinstance(node, LogicalExpr):
        translated = [user_filter_clause(t) for t in node.terms]
        terms: list[Any] = [t for t in translated if t is not None]
        if len(terms) != len(translated):
            return None
        return sa.and_(*terms) if node.op == LogicalOperator.and_ else sa.or_(*terms)
    if isinstance(node, Not):
        inner = user_filter_clause(node.expr)
        return None if inner is None else sa.not_(inner)
    if isinstance(node, Present):
        path = _path(node).lower()
        if path in _LOWER_TEXT or path in ("id", "active", "username"):
            return sa.true()
        if path in _PROFILE_TEXT:
            return _PROFILE_TEXT[path] != ""
        return None
    if not isinstance(node, Comparison):
        return None
    path, op, value = _path(node).lower(), node.op, node.value
    if path == "active":
        if not isinstance(value, bool) or op not in (CompareOperator.eq, CompareOperator.ne):
            return None
        active = users.c.status != "disabled"
        return active if (op == CompareOperator.eq) == value else sa.not_(active)
    # Non-text values and non-ASCII text (SQLite lowers ASCII only) take the slow way.
    if not isinstance(value, str) or not value or not value.isascii():
        return None
    if path == "id":
        return _text_match(users.c.public_id, op, value)
    if path in _LOWER_TEXT:
        return _text_match(_LOWER_TEXT[path], op, value.lower())
    if path in _PROFILE_TEXT and op != CompareOperator.ne:
        return _text_match(sa.func.lower(_PROFILE_TEXT[path]), op, value.lower())
    return None


async def search_members(
    conn: Reader,
    org: Any,
    *,
    where: Any,
    sort: str | None,
    descending: bool,
    offset: int,
    limit: int,
) -> tuple[list[Any], int]:
    """One page of the org's members matching ``where`` (a ``user_filter_clause``), in
    ``sort`` order (a ``MEMBER_SORTS`` key; ties, and no sort, by email then id), and how many
    match in all."""
    base = (
        sa.select(*MEMBER_COLUMNS)
        .select_from(users.join(memberships, memberships.c.user_id == users.c.id))
        .where(memberships.c.org_id == org.id)
    )
    if where is not None:
        base = base.where(where)
    total: int = (
        await conn.execute(sa.select(sa.func.count()).select_from(base.subquery()))
    ).scalar_one()
    order = [users.c.email_normalized, users.c.id]
    if sort is not None:
        key = MEMBER_SORTS[sort]
        order.insert(0, key.desc() if descending else key)
    rows = list((await conn.execute(base.order_by(*order).offset(offset).limit(limit))).all())
    return rows, total
