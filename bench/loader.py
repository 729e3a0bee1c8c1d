"""Bulk loader: a realistic orgplane database of N orgs, written straight into orgplane's tables.

Used by ``bench/suite.py`` (the 1,000-org base data set and the scale scenario) and
``bench/scale.py``. Run it after ``orgplane migrate`` and ``orgplane bootstrap``: it grows the
bootstrap root's tenant and adds three more roots, so the database holds:

* ``orgs``: N orgs in four tenant trees (70 / 15 / 10 / 5% of them). Each tree: regions under
  the root, accounts spread unevenly (Pareto weights) over the regions, projects over the
  accounts, environments over the projects, and chains of 5 orgs hanging from environments down
  to depth 9 (the default depth limit is 10); the main tenant also has one wide org with
  N/15 children (at least 150) under its first region. Ids follow a random creation order, so
  the children of one parent are spread through the table as they are in a real database.
  10% of the orgs carry a tag (``org_tags`` too), 1% are disabled, 0.5% of the leaves are
  soft-deleted.
* ``users`` (N/10, each a member of one org, a fifth of them of two, with a system role),
  ``credentials`` (N/20 native API keys, 5% revoked; their secrets are random and unknown);
* ``audit_log``: 10 x N entries over the last year, newest last, each tenant's entries a valid
  hash chain continuing the bootstrap's (``orgplane audit verify`` passes; the chain heads are
  updated), spread unevenly over orgs and actors, with orgplane's own action names and
  before/after documents;
* ``usage_events`` (N events over the last 40 days) and the counters orgplane keeps from them,
  ``usage_daily`` and ``usage_subtree_daily``, exactly consistent with the events.

Rows are generated in a worker thread while the previous batch is written: on PostgreSQL with
``COPY`` (asyncpg's ``copy_records_to_table``), on SQLite with ``executemany`` of the INSERT that
SQLAlchemy Core compiles for the table, journal off during the load. PostgreSQL then gets the
sequences moved past the loaded ids, ``VACUUM ANALYZE`` and a checkpoint (what a maintained
database has); SQLite is left as orgplane leaves it (back in WAL mode, no ``ANALYZE``).
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import random
import sqlite3
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from orgplane.core.audit import service as audit_service
from orgplane.core.audit.service import entry_hash
from orgplane.models import (
    audit_chain_heads,
    audit_log,
    credentials,
    membership_roles,
    memberships,
    org_tags,
    orgs,
    usage_daily,
    usage_events,
    usage_subtree_daily,
    users,
)

BATCH = 20_000
TENANT_SHARES = (0.70, 0.15, 0.10, 0.05)
CHAIN = 5
DAY_US = 86_400_000_000
ORG_SPAN_DAYS = 730
AUDIT_SPAN_DAYS = 365
USAGE_SPAN_DAYS = 40
MIN_ORGS = 500
PROGRESS_SECONDS = 5.0
ROLES = ("owner", "administrator", "standard", "read-only")
ROLE_WEIGHTS = (1, 2, 10, 4)
PLANS = ("trial", "free", "pro", "enterprise")
PLAN_WEIGHTS = (5, 50, 35, 10)
COUNTRIES = (None, "US", "DE", "FR", "GB", "JP", "BR", "IN")
TAGS = ("env:prod", "env:staging", "team:data", "team:web", "cost-center:42")
IPS = tuple(f"10.{a}.{b}.{a * b % 250 + 1}" for a in range(4) for b in range(16))
USER_AGENTS = ("orgplane-cli", "python-httpx/0.28", "Mozilla/5.0 (X11; Linux x86_64)", "curl/8.5")
# Audit actions, weights (per 100), and what each entry carries: target type and documents.
ACTIONS = (
    ("usage.ingested", 40),
    ("org.updated", 15),
    ("credits.allocated", 10),
    ("user.updated", 8),
    ("org.created", 6),
    ("role.assigned", 6),
    ("key.created", 5),
    ("invitation.created", 5),
    ("key.revoked", 2),
    ("org.moved", 1),
)
METER_RANGES = {"operations": (1, 5_000), "credits": (1, 100), "transfer": (1_000, 5_000_000)}

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Sizes:
    orgs: int
    audit: int
    users: int
    keys: int
    events: int

    @classmethod
    def for_orgs(cls, orgs: int, audit: int | None = None, events: int | None = None) -> Sizes:
        return cls(
            orgs=orgs,
            audit=10 * orgs if audit is None else audit,
            users=max(10, orgs // 10),
            keys=max(10, orgs // 20),
            events=orgs if events is None else events,
        )


@dataclass
class Loaded:
    """What was loaded (rows and seconds per table) and the orgs the scenarios aim at."""

    sizes: Sizes
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    targets: dict[str, Any] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return round(sum(self.seconds.values()), 1)


# ---------------------------------------------------------------------------------------------
# the tree


@dataclass
class Tree:
    """Orgs planned in memory by index (0 is the bootstrap root); ids come later."""

    parent: list[int] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)
    tenant: list[int] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    born: list[float] = field(default_factory=list)  # creation time, 0..1 of the span

    def root(self, tenant: int, born: float) -> int:
        self.parent.append(-1)
        self.depth.append(0)
        self.tenant.append(tenant)
        self.kind.append("root")
        self.born.append(born)
        return len(self.parent) - 1

    def add(self, parent: int, kind: str, rng: random.Random) -> int:
        self.parent.append(parent)
        self.depth.append(self.depth[parent] + 1)
        self.tenant.append(self.tenant[parent])
        self.kind.append(kind)
        after = self.born[parent]
        self.born.append(after + (1 - after) * rng.random() ** 2 + 1e-9)
        return len(self.parent) - 1

    def spread(self, parents: list[int], kind: str, n: int, rng: random.Random) -> list[int]:
        """``n`` orgs under ``parents``, unevenly (Pareto weights), as real trees grow."""
        if not parents or n <= 0:
            return []
        weights = [rng.paretovariate(1.2) for _ in parents]
        return [self.add(p, kind, rng) for p in rng.choices(parents, weights=weights, k=n)]

    def __len__(self) -> int:
        return len(self.parent)


@dataclass
class TenantPlan:
    root: int
    regions: list[int]
    wide: int | None


def plan_tenant(tree: Tree, root: int, total: int, *, wide: bool, rng: random.Random) -> TenantPlan:
    """``total`` orgs (the root included) under ``root``."""
    left = total - 1
    regions = [
        tree.add(root, "region", rng) for _ in range(min(left, max(2, round(total ** (1 / 3) / 2))))
    ]
    left -= len(regions)
    wide_org = None
    if wide and left > 300:
        wide_org = tree.add(regions[0], "wide", rng)
        children = min(max(150, total // 15), left - 150)
        for _ in range(children):
            tree.add(wide_org, "item", rng)
        left -= 1 + children
    accounts = tree.spread(regions, "account", min(left, max(4, total // 60)), rng)
    left -= len(accounts)
    chains = min(int(total * 0.02) // CHAIN, left // (3 * CHAIN))
    projects = tree.spread(accounts, "project", int((left - chains * CHAIN) * 0.55), rng)
    left -= len(projects)
    envs = tree.spread(projects or accounts, "env", left - chains * CHAIN, rng)
    hang_from = envs or projects or accounts or regions
    for c in range(chains):
        link = hang_from[(c * 7919) % len(hang_from)]
        for _ in range(CHAIN):
            link = tree.add(link, "chain", rng)
    return TenantPlan(root, regions, wide_org)


def plan_tree(orgs_total: int, rng: random.Random) -> tuple[Tree, list[TenantPlan]]:
    tree = Tree()
    shares = [round(orgs_total * s) for s in TENANT_SHARES[1:]]
    sizes = [orgs_total - sum(shares), *shares]
    tenants = []
    for t, size in enumerate(sizes):
        root = tree.root(t, 0.0 if t == 0 else 0.05 + 0.25 * t)
        tenants.append(plan_tenant(tree, root, size, wide=t == 0, rng=rng))
    return tree, tenants


# ---------------------------------------------------------------------------------------------
# values


_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def public_id(rng: random.Random, prefix: str = "") -> str:
    """orgplane's shape: 12 characters of [0-9a-z] (62 random bits), after an optional prefix."""
    number = rng.getrandbits(62)
    chars = []
    for _ in range(12):
        number, rem = divmod(number, 36)
        chars.append(_ALPHABET[rem])
    return prefix + "".join(chars)


def unique_ids(rng: random.Random, n: int, prefix: str = "") -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        candidate = public_id(rng, prefix)
        if candidate not in seen:
            seen.add(candidate)
            out.append(candidate)
    return out


class Stamps:
    """Timestamps as whole microseconds since the epoch, turned into what each driver stores:
    an aware datetime for asyncpg, SQLAlchemy's text format for SQLite; and the ISO form the
    audit chain hashes."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        self._days: dict[int, tuple[str, date]] = {}

    def _day(self, ordinal: int) -> tuple[str, date]:
        found = self._days.get(ordinal)
        if found is None:
            day = date(1970, 1, 1) + timedelta(days=ordinal)
            found = self._days[ordinal] = (day.isoformat(), day)
        return found

    def parts(self, us: int) -> tuple[str, date, int, int, int, int]:
        days, rest = divmod(us, DAY_US)
        text, day = self._day(days)
        seconds, micro = divmod(rest, 1_000_000)
        hours, seconds = divmod(seconds, 3600)
        minutes, seconds = divmod(seconds, 60)
        return text, day, hours, minutes, seconds, micro

    def value(self, us: int | None) -> Any:
        if us is None:
            return None
        text, day, h, m, s, micro = self.parts(us)
        if self.sqlite:
            return f"{text} {h:02d}:{m:02d}:{s:02d}.{micro:06d}"
        return datetime(day.year, day.month, day.day, h, m, s, micro, tzinfo=UTC)

    def value_and_iso(self, us: int) -> tuple[Any, str]:
        text, day, h, m, s, micro = self.parts(us)
        clock = f"{h:02d}:{m:02d}:{s:02d}.{micro:06d}"
        iso = f"{text}T{clock}+00:00"
        if self.sqlite:
            return f"{text} {clock}", iso
        return datetime(day.year, day.month, day.day, h, m, s, micro, tzinfo=UTC), iso

    def day(self, us: int) -> Any:
        text, day = self._day(us // DAY_US)
        return text if self.sqlite else day


def jsonb(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def now_us() -> int:
    return int(time.time() * 1_000_000)


# ---------------------------------------------------------------------------------------------
# sinks: where rows go


class Sink:
    dialect = ""

    async def write(self, table: sa.Table, columns: Sequence[str], rows: list[Row]) -> None:
        raise NotImplementedError

    async def fetch(self, sql: str) -> list[Row]:
        raise NotImplementedError

    async def execute(self, sql: str) -> None:
        raise NotImplementedError

    async def finish(self, tables: Sequence[sa.Table]) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class SqliteSink(Sink):
    """One sqlite3 connection; executemany, a transaction per batch."""

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        for pragma in (
            "journal_mode=OFF",
            "synchronous=OFF",
            "cache_size=-400000",
            "temp_store=MEMORY",
        ):
            self.conn.execute(f"PRAGMA {pragma}")
        self._sql: dict[tuple[str, tuple[str, ...]], str] = {}

    def _insert_sql(self, table: sa.Table, columns: Sequence[str]) -> str:
        key = (table.name, tuple(columns))
        if key not in self._sql:
            statement = sa.insert(table).compile(
                dialect=sqlite_dialect.dialect(), column_keys=list(columns)
            )
            self._sql[key] = str(statement)
        return self._sql[key]

    async def write(self, table: sa.Table, columns: Sequence[str], rows: list[Row]) -> None:
        self.conn.execute("BEGIN")
        self.conn.executemany(self._insert_sql(table, columns), rows)
        self.conn.execute("COMMIT")

    async def fetch(self, sql: str) -> list[Row]:
        return [tuple(r) for r in self.conn.execute(sql).fetchall()]

    async def execute(self, sql: str) -> None:
        self.conn.execute(sql)

    async def finish(self, tables: Sequence[sa.Table]) -> None:
        # orgplane's own connections use WAL; put the file back in that mode.
        self.conn.execute("PRAGMA journal_mode=WAL")

    async def close(self) -> None:
        self.conn.close()


class PostgresSink(Sink):
    """One asyncpg connection; COPY per batch."""

    dialect = "postgresql"

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, dsn: str) -> PostgresSink:
        import asyncpg

        conn = await asyncpg.connect(dsn, timeout=30)
        await conn.execute("SET synchronous_commit = off")
        return cls(conn)

    async def write(self, table: sa.Table, columns: Sequence[str], rows: list[Row]) -> None:
        await self.conn.copy_records_to_table(table.name, records=rows, columns=list(columns))

    async def fetch(self, sql: str) -> list[Row]:
        return [tuple(r) for r in await self.conn.fetch(sql)]

    async def execute(self, sql: str) -> None:
        await self.conn.execute(sql)

    async def finish(self, tables: Sequence[sa.Table]) -> None:
        for name in ("orgs", "users", "credentials", "audit_log", "usage_events"):
            await self.conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                f"(SELECT max(id) FROM {name}))"
            )
        for table in tables:
            await self.conn.execute(f"VACUUM ANALYZE {table.name}")
        await self.conn.execute("CHECKPOINT")

    async def close(self) -> None:
        await self.conn.close()


async def open_sink(database_url: str) -> Sink:
    """A sink for an orgplane database URL (``sqlite+aiosqlite:///...``, ``postgresql+asyncpg``)."""
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if not url.database:
            raise ValueError(f"no SQLite file in {database_url}")
        return SqliteSink(url.database)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return await PostgresSink.open(dsn)


async def pump(
    sink: Sink,
    table: sa.Table,
    columns: Sequence[str],
    batches: Iterator[list[Row]],
    total: int,
    say: Callable[[str], None],
) -> int:
    """Write every batch, printing progress every few seconds."""
    written = 0
    started = last_note = time.monotonic()
    for batch in batches:
        await sink.write(table, columns, batch)
        written += len(batch)
        if time.monotonic() - last_note >= PROGRESS_SECONDS:
            last_note = time.monotonic()
            rate = written / (last_note - started)
            say(f"  {table.name}: {written:,} / {total:,} rows ({rate:,.0f} rows/s)")
    return written


class Forked:
    """Batches generated in a forked child process and sent back pickled through a pipe, so
    that generating (Python, one core) and writing (the driver and the database, the other)
    overlap; the pipe holds about one batch, which keeps the child at most a batch ahead.
    ``state`` runs in the child at the end; what it returns is in ``.state`` afterwards."""

    def __init__(
        self, batches: Iterator[list[Row]], state: Callable[[], Any] | None = None
    ) -> None:
        context = multiprocessing.get_context("fork")
        self._receive, sender = context.Pipe(duplex=False)
        self._child = context.Process(target=_produce, args=(batches, state, sender), daemon=True)
        self._child.start()
        sender.close()
        self.state: Any = None

    def __iter__(self) -> Iterator[list[Row]]:
        try:
            while True:
                kind, payload = self._receive.recv()
                if kind == "batch":
                    yield payload
                elif kind == "end":
                    self.state = payload
                    return
                else:
                    raise RuntimeError(f"the row generator failed:\n{payload}")
        finally:
            with contextlib.suppress(OSError):
                self._receive.close()
            self._child.join(timeout=10)
            if self._child.is_alive():
                self._child.kill()
                self._child.join()


def _produce(batches: Iterator[list[Row]], state: Callable[[], Any] | None, sender: Any) -> None:
    try:
        for batch in batches:
            sender.send(("batch", batch))
        sender.send(("end", state() if state else None))
    except BrokenPipeError:
        pass  # the parent stopped reading (it failed or was interrupted)
    except BaseException:
        sender.send(("error", traceback.format_exc()))
    finally:
        sender.close()


def batched(rows: Iterator[Row], size: int = BATCH) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------
# the loader


class Loader:
    """Plans the data set, then writes it table by table through a sink."""

    def __init__(self, sink: Sink, sizes: Sizes, seed: int, say: Callable[[str], None]) -> None:
        if sizes.orgs < MIN_ORGS:
            raise ValueError(f"the loader needs at least {MIN_ORGS} orgs")
        self.sink = sink
        self.sizes = sizes
        self.rng = random.Random(seed)
        self.say = say
        self.stamps = Stamps(sink.dialect)
        self.now = now_us()
        self.loaded = Loaded(sizes)
        self.tree, self.tenants = plan_tree(sizes.orgs, self.rng)
        self.ids: list[int] = []
        self.paths: list[str] = []
        self.public: list[str] = []
        self.created: list[int] = []
        self.deleted: set[int] = set()
        self.user_ids: list[int] = []
        self.user_public: list[str] = []
        self.user_tenant: list[int] = []
        self.key_public: list[str] = []
        self.key_tenant: list[int] = []
        self.order: list[int] = []
        self.tags: list[tuple[int, str]] = []
        self.audit_counts: Counter[int] = Counter()
        self.actor_counts: Counter[str] = Counter()

    async def run(self) -> Loaded:
        await self._read_start()
        self._assign_ids()
        await self._timed(
            "orgs",
            orgs,
            ORG_COLUMNS,
            self._org_rows(random.Random(self.rng.getrandbits(64))),
            len(self.tree) - 1,
            forked=True,
        )
        tags = [(self.ids[i], t) for i, t in self.tags]
        await self._timed("org_tags", org_tags, ("org_id", "tag"), iter(tags), len(tags))
        await self._people()
        await self._timed(
            "credentials", credentials, KEY_COLUMNS, self._key_rows(), self.sizes.keys
        )
        await self._audit()
        await self._usage()
        started = time.monotonic()
        self.say(f"[load] finishing ({self.sink.dialect}: sequences, VACUUM ANALYZE, checkpoint)")
        await self.sink.finish(LOADED_TABLES)
        self.loaded.seconds["finish"] = round(time.monotonic() - started, 1)
        self._targets()
        return self.loaded

    async def _timed(
        self,
        name: str,
        table: sa.Table,
        columns: Sequence[str],
        rows: Iterator[Row],
        total: int,
        *,
        forked: bool = False,
        state: Callable[[], Any] | None = None,
    ) -> Any:
        """Write ``rows`` (generated in a child process when ``forked``); returns the child's
        ``state()``."""
        started = time.monotonic()
        batches: Iterator[list[Row]] = batched(rows)
        producer = Forked(batches, state) if forked else None
        if producer is None:
            written = await pump(self.sink, table, columns, batches, total, self.say)
        else:
            received = iter(producer)
            try:
                written = await pump(self.sink, table, columns, received, total, self.say)
            finally:
                # A failed write leaves the child blocked on the pipe: closing the reader
                # stops it now, not at the interpreter's exit (which then waited for it).
                received.close()  # type: ignore[attr-defined]
        seconds = time.monotonic() - started
        self.loaded.rows[name] = written
        self.loaded.seconds[name] = round(seconds, 1)
        rate = written / seconds if seconds else 0.0
        self.say(f"[load] {name}: {written:,} rows in {seconds:.1f} s ({rate:,.0f} rows/s)")
        return producer.state if producer is not None else None

    async def _read_start(self) -> None:
        rows = await self.sink.fetch("SELECT id, public_id FROM orgs ORDER BY id")
        if len(rows) != 1:
            raise RuntimeError(f"expected one bootstrapped root, found {len(rows)} orgs")
        self.root_id, self.root_public = rows[0]
        head = await self.sink.fetch(
            f"SELECT seq, last_hash FROM audit_chain_heads WHERE root_id = {self.root_id}"
        )
        self.root_head = (int(head[0][0]), str(head[0][1]))
        self.max_ids = {}
        for name in ("credentials", "audit_log", "users", "usage_events"):
            found = await self.sink.fetch(f"SELECT max(id) FROM {name}")
            self.max_ids[name] = int(found[0][0] or 0)
        self.meters = [str(r[0]) for r in await self.sink.fetch("SELECT name FROM meters")]

    # --- orgs --------------------------------------------------------------------------------

    def _assign_ids(self) -> None:
        """Ids in creation order (parents before children), then paths and public ids."""
        n = len(self.tree)
        order = sorted(range(1, n), key=lambda i: (self.tree.born[i], i))
        self.order = order
        self.ids = [0] * n
        self.ids[0] = self.root_id
        for position, index in enumerate(order):
            self.ids[index] = self.root_id + 1 + position
        self.paths = [""] * n
        self.paths[0] = f"/{self.root_id}/"
        for index in order:
            parent = self.tree.parent[index]
            prefix = "/" if parent < 0 else self.paths[parent]
            self.paths[index] = f"{prefix}{self.ids[index]}/"
        self.public = unique_ids(self.rng, n)
        self.public[0] = self.root_public
        start = self.now - ORG_SPAN_DAYS * DAY_US
        span = ORG_SPAN_DAYS * DAY_US - 3_600_000_000
        self.created = [start + int(b * span) for b in self.tree.born]
        has_child = {p for p in self.tree.parent if p >= 0}
        leaves = [i for i in range(1, n) if i not in has_child]
        self.deleted = set(self.rng.sample(leaves, len(leaves) // 200))
        wide = self.tenants[0].wide
        if wide is not None:  # one of the first children listed is deleted (lists skip it)
            self.deleted.add(next(i for i in order if self.tree.parent[i] == wide))
        self.tags = [(i, self.rng.choice(TAGS)) for i in range(1, n) if self.rng.random() < 0.1]

    def _root_of(self, index: int) -> int:
        return self.ids[self.tenants[self.tree.tenant[index]].root]

    def _org_rows(self, rng: random.Random) -> Iterator[Row]:
        stamps, tree = self.stamps, self.tree
        tags = dict(self.tags)
        for index in self.order:
            parent = tree.parent[index]
            created = self.created[index]
            deleted = created + DAY_US if index in self.deleted else None
            kind = tree.kind[index]
            name = "Marketplace" if kind == "wide" else f"{kind.title()} {index}"
            status = "disabled" if kind in ("env", "item") and rng.random() < 0.01 else "active"
            tag = tags.get(index)
            yield (
                self.ids[index],
                str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                self.public[index],
                self.ids[parent] if parent >= 0 else None,
                self._root_of(index),
                self.paths[index],
                tree.depth[index],
                name,
                "",
                status,
                "us1",
                rng.choice(COUNTRIES),
                "UTC",
                rng.choices(PLANS, weights=PLAN_WEIGHTS)[0],
                "{}",
                jsonb([tag] if tag else []),
                "{}",
                stamps.value(created),
                stamps.value(deleted or created),
                stamps.value(deleted),
                None,
                2 if deleted else 1,
            )

    # --- people and keys ---------------------------------------------------------------------

    async def _people(self) -> None:
        n = self.sizes.users
        first = self.max_ids["users"] + 1
        self.user_ids = list(range(first, first + n))
        self.user_public = unique_ids(self.rng, n, "usr_")
        members = self._memberships()
        self.user_tenant = [0] * n
        for u, org in members:
            self.user_tenant[u] = self.tree.tenant[org]
        await self._timed("users", users, USER_COLUMNS, self._user_rows(), n)
        member_rows = [
            (self.user_ids[u], self.ids[o], self._root_of(o), self.stamps.value(self.created[o]))
            for u, o in members
        ]
        await self._timed(
            "memberships", memberships, MEMBER_COLUMNS, iter(member_rows), len(member_rows)
        )
        roles = [
            (self.user_ids[u], self.ids[o], self.rng.choices(ROLES, weights=ROLE_WEIGHTS)[0])
            for u, o in members
        ]
        await self._timed(
            "membership_roles", membership_roles, ROLE_COLUMNS, iter(roles), len(roles)
        )

    def _memberships(self) -> list[tuple[int, int]]:
        """(user index, org index): one org each, a second one (same tenant) for a fifth."""
        live = [i for i in range(len(self.tree)) if i not in self.deleted]
        pairs = []
        for u in range(self.sizes.users):
            org = self.rng.choice(live)
            pairs.append((u, org))
            if self.rng.random() < 0.2:
                other = self.rng.choice(live)
                if other != org and self.tree.tenant[other] == self.tree.tenant[org]:
                    pairs.append((u, other))
        return pairs

    def _user_rows(self) -> Iterator[Row]:
        rng, stamps = self.rng, self.stamps
        for u, (user_id, public) in enumerate(zip(self.user_ids, self.user_public, strict=True)):
            created = self.now - rng.randrange(ORG_SPAN_DAYS * DAY_US)
            email = f"user{u}@example.test"
            yield (
                user_id,
                public,
                email,
                email,
                f"First{u}",
                f"Last{u}",
                "",
                "active" if rng.random() < 0.9 else "pending",
                0,
                stamps.value(created),
                stamps.value(created),
                1,
            )

    def _key_rows(self) -> Iterator[Row]:
        rng, stamps = self.rng, self.stamps
        n = self.sizes.keys
        self.key_public = unique_ids(rng, n, "key_")
        live = [i for i in range(len(self.tree)) if i not in self.deleted]
        self.key_tenant = []
        first = self.max_ids["credentials"] + 1
        for k in range(n):
            org = rng.choice(live)
            self.key_tenant.append(self.tree.tenant[org])
            created = self.created[org] + rng.randrange(DAY_US)
            revoked = created + DAY_US if rng.random() < 0.05 else None
            scopes = ["*"] if rng.random() < 0.3 else ["orgs:read", "usage:write"]
            yield (
                first + k,
                self.key_public[k],
                self.ids[org],
                self._root_of(org),
                "native",
                f"key {k}",
                hashlib.sha256(os.urandom(24)).hexdigest(),
                "opk_" + public_id(rng)[:4],
                jsonb(scopes),
                stamps.value(created),
                stamps.value(revoked),
            )

    # --- audit -------------------------------------------------------------------------------

    async def _audit(self) -> None:
        audit = AuditPlan(self)
        heads, self.audit_counts, self.actor_counts = await self._timed(
            "audit_log",
            audit_log,
            AUDIT_COLUMNS,
            audit.rows(),
            self.sizes.audit,
            forked=True,
            state=lambda: (audit.heads, audit.org_counts, audit.actor_counts),
        )
        for t, plan in enumerate(self.tenants):
            seq, last = heads[t]
            root = self.ids[plan.root]
            if t == 0:
                await self.sink.execute(
                    f"UPDATE audit_chain_heads SET seq = {seq}, last_hash = '{last}' "
                    f"WHERE root_id = {root}"
                )
            else:
                await self.sink.write(
                    audit_chain_heads, ("root_id", "seq", "last_hash"), [(root, seq, last)]
                )

    # --- usage -------------------------------------------------------------------------------

    async def _usage(self) -> None:
        daily: defaultdict[tuple[int, str, int], int] = defaultdict(int)
        subtree: defaultdict[tuple[int, str, int], int] = defaultdict(int)
        await self._timed(
            "usage_events",
            usage_events,
            EVENT_COLUMNS,
            self._event_rows(daily, subtree),
            self.sizes.events,
        )
        for name, table, counts in (
            ("usage_daily", usage_daily, daily),
            ("usage_subtree_daily", usage_subtree_daily, subtree),
        ):
            await self._timed(name, table, DAILY_COLUMNS, self._daily_rows(counts), len(counts))

    def _event_rows(
        self,
        daily: defaultdict[tuple[int, str, int], int],
        subtree: defaultdict[tuple[int, str, int], int],
    ) -> Iterator[Row]:
        rng, stamps, tree = self.rng, self.stamps, self.tree
        n = len(tree)
        weights = list(accumulate(rng.paretovariate(1.1) for _ in range(n)))
        meters = [m for m in self.meters if m in METER_RANGES] or self.meters
        start = self.now - USAGE_SPAN_DAYS * DAY_US
        first = self.max_ids["usage_events"] + 1
        picks = rng.choices(range(n), cum_weights=weights, k=self.sizes.events)
        for e, org in enumerate(picks):
            meter = meters[e % len(meters)]
            low, high = METER_RANGES.get(meter, (1, 100))
            quantity = rng.randint(low, high)
            at = start + rng.randrange(USAGE_SPAN_DAYS * DAY_US - 60_000_000)
            day = at // DAY_US
            daily[(org, meter, day)] += quantity
            link = org
            while link >= 0:
                subtree[(link, meter, day)] += quantity
                link = tree.parent[link]
            yield (
                first + e,
                self._root_of(org),
                f"bench-{e}",
                self.ids[org],
                meter,
                quantity,
                stamps.value(at),
                stamps.day(at),
                stamps.value(at + 1_000_000),
            )

    def _daily_rows(self, counts: dict[tuple[int, str, int], int]) -> Iterator[Row]:
        for (org, meter, day), quantity in counts.items():
            yield (
                self.ids[org],
                meter,
                self.stamps.day(day * DAY_US),
                self._root_of(org),
                quantity,
            )

    # --- what the scenarios aim at -----------------------------------------------------------

    def _targets(self) -> None:
        tree, main = self.tree, self.tenants[0]
        region = main.regions[0]
        in_region = [i for i in range(len(tree)) if self._under(i, region)]
        reads = [i for i in in_region if tree.kind[i] == "project" and i not in self.deleted]
        deep = max(in_region, key=lambda i: tree.depth[i])
        wide = main.wide if main.wide is not None else region
        busiest = [i for i, _ in self.audit_counts.most_common(20)]
        live = [i for i in range(len(tree)) if tree.tenant[i] == 0 and i not in self.deleted]
        bottom = max(tree.depth[i] for i in live)
        deepest = [i for i in live if tree.depth[i] == bottom]
        self.loaded.targets = {
            "root": self.root_public,
            "region": self.public[region],
            "regions": [self.public[r] for r in main.regions],
            "read": self.public[reads[len(reads) // 2] if reads else in_region[-1]],
            "deep": self.public[deep],
            "deep_depth": tree.depth[deep],
            # Three of the main tenant's deepest live orgs, spread over its tree.
            "deep_orgs": [
                self.public[deepest[k * len(deepest) // 3]] for k in range(min(3, len(deepest)))
            ],
            "wide": self.public[wide],
            "wide_children": sum(
                1 for i, p in enumerate(tree.parent) if p == wide and i not in self.deleted
            ),
            "audit_orgs": [self.public[i] for i in busiest],
            "audit_org_entries": [self.audit_counts[i] for i in busiest],
            "audit_actors": [a for a, _ in self.actor_counts.most_common(10)],
            "audit_first_day": self.stamps.parts(self.now - AUDIT_SPAN_DAYS * DAY_US)[0],
            "max_depth": max(tree.depth),
            "tenants": [sum(1 for t in tree.tenant if t == n) for n in range(len(self.tenants))],
        }

    def _under(self, index: int, ancestor: int) -> bool:
        return self.paths[index].startswith(self.paths[ancestor])


class AuditPlan:
    """Audit entries in time order, each tenant's a hash chain from its head."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        rng, tree = loader.rng, loader.tree
        tenants = len(loader.tenants)
        self.members: list[list[int]] = [[] for _ in range(tenants)]
        for i in range(len(tree)):
            self.members[tree.tenant[i]].append(i)
        self.org_weights = []
        for t, members in enumerate(self.members):
            weights = [rng.paretovariate(1.16) for _ in members]
            weights[0] = 0.02 * sum(weights)  # the root: its admins act there often
            self.org_weights.append(list(accumulate(weights)))
            assert members[0] == loader.tenants[t].root
        self.tenant_weights = list(accumulate(len(m) for m in self.members))
        self.actors = [self._actors(t) for t in range(tenants)]
        self.heads = [(0, "0" * 64) for _ in range(tenants)]
        self.heads[0] = loader.root_head
        self.rng = random.Random(rng.getrandbits(64))  # the rows' own: drawn in a child
        self.root_ids = [loader.ids[plan.root] for plan in loader.tenants]
        self.org_counts: Counter[int] = Counter()
        self.actor_counts: Counter[str] = Counter()
        self.actions = [a for a, _ in ACTIONS]
        self.action_weights = list(accumulate(w for _, w in ACTIONS))

    def _actors(self, tenant: int) -> tuple[list[tuple[str, str | None, int | None]], list[float]]:
        loader, rng = self.loader, self.loader.rng
        keys = [k for k, t in zip(loader.key_public, loader.key_tenant, strict=True) if t == tenant]
        people = [u for u, t in enumerate(loader.user_tenant) if t == tenant]
        actors: list[tuple[str, str | None, int | None]] = [("system", None, None)]
        actors += [(f"key:{k}", k, None) for k in keys[:40]]
        actors += [
            (f"user:{loader.user_public[u]}", f"ses_{u + 1}", loader.user_ids[u])
            for u in people[:40]
        ]
        return actors, list(accumulate(rng.paretovariate(1.3) for _ in actors))

    def rows(self) -> Iterator[Row]:
        loader = self.loader
        n = loader.sizes.audit
        start = loader.now - AUDIT_SPAN_DAYS * DAY_US
        step = (AUDIT_SPAN_DAYS * DAY_US - 120_000_000) // max(1, n)
        next_id = loader.max_ids["audit_log"] + 1
        for offset in range(0, n, BATCH):
            k = min(BATCH, n - offset)
            yield from self._batch(next_id + offset, start + offset * step, step, k)

    def _batch(self, first_id: int, first_us: int, step: int, k: int) -> Iterator[Row]:
        """``k`` entries: tenants, orgs, actors and actions drawn for the batch at once, then
        each entry hashed onto its tenant's chain (a hot loop: locals only)."""
        loader, rng = self.loader, self.rng
        tenants = rng.choices(range(len(self.members)), cum_weights=self.tenant_weights, k=k)
        counts = Counter(tenants)
        orgs_by: dict[int, Iterator[int]] = {}
        actors_by: dict[int, Iterator[tuple[str, str | None, int | None]]] = {}
        for t, c in counts.items():
            orgs_by[t] = iter(rng.choices(self.members[t], cum_weights=self.org_weights[t], k=c))
            actors, weights = self.actors[t]
            actors_by[t] = iter(rng.choices(actors, cum_weights=weights, k=c))
        actions = rng.choices(self.actions, cum_weights=self.action_weights, k=k)
        ids, roots, heads, stamps = loader.ids, self.root_ids, self.heads, loader.stamps
        dumps, sort_keys, sha256 = orjson.dumps, orjson.OPT_SORT_KEYS, hashlib.sha256
        for j in range(k):
            entry_id, tenant, action = first_id + j, tenants[j], actions[j]
            org = next(orgs_by[tenant])
            label, key_id, user_id = next(actors_by[tenant])
            seq, prev = heads[tenant]
            seq += 1
            at_value, at_iso = stamps.value_and_iso(first_us + j * step + j % 1000)
            target_type, target_id, before, after = self._documents(action, org, entry_id)
            request_id = f"req_{entry_id:x}"
            ip = IPS[entry_id % len(IPS)]
            agent = USER_AGENTS[entry_id % len(USER_AGENTS)]
            document = {
                "action": action,
                "actor": label,
                "actor_key_id": key_id,
                "actor_user_id": user_id,
                "after": after,
                "at": at_iso,
                "before": before,
                "ip": ip,
                "org_id": ids[org],
                "request_id": request_id,
                "root_id": roots[tenant],
                "seq": seq,
                "target_id": target_id,
                "target_type": target_type,
                "user_agent": agent,
                "surface": "api",
            }
            digest = sha256(prev.encode() + b"\n" + dumps(document, option=sort_keys)).hexdigest()
            if j == 0:
                self._check(prev, document, digest)
            heads[tenant] = (seq, digest)
            if tenant == 0:
                self.org_counts[org] += 1
                self.actor_counts[label] += 1
            yield (
                entry_id,
                roots[tenant],
                seq,
                ids[org],
                at_value,
                label,
                key_id,
                user_id,
                action,
                target_type,
                target_id,
                None if before is None else dumps(before).decode(),
                None if after is None else dumps(after).decode(),
                request_id,
                ip,
                agent,
                "api",
                prev,
                digest,
            )

    @staticmethod
    def _check(prev: str, document: dict[str, Any], digest: str) -> None:
        """The chain must be orgplane's: compare with its own ``entry_hash`` once a batch."""
        entry = {**document, "at": datetime.fromisoformat(document["at"])}
        if entry_hash(prev, entry) != digest:
            raise RuntimeError("the loader's audit hash differs from orgplane's entry_hash")

    def _documents(
        self, action: str, org: int, entry_id: int
    ) -> tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]:
        loader = self.loader
        public = loader.public[org]
        small = entry_id % 97
        if action == "usage.ingested":
            return (
                "org",
                public,
                None,
                {"usage": {"operations": 10 * small + 1}, "accepted": small + 1, "duplicates": 0},
            )
        if action == "org.updated":
            return "org", public, {"plan": "free"}, {"plan": "pro"}
        if action == "credits.allocated":
            parent = loader.tree.parent[org]
            parent_public = loader.public[parent] if parent >= 0 else public
            return (
                "allocation",
                f"{public}/operations",
                {"limit": 1000 * small, "charge": 0},
                {"limit": 1000 * small + 500, "charge": 0, "parent": parent_public},
            )
        if action == "org.created":
            return "org", public, None, {"name": f"Org {org}"}
        if action == "org.moved":
            return "org", public, {"parent": "elsewhere"}, {"parent": public}
        if action in ("key.created", "key.revoked"):
            keys = loader.key_public
            key = keys[entry_id % len(keys)]
            after = {"name": "ci", "scopes": ["orgs:read"]} if action == "key.created" else None
            return "key", key, None, after
        people = loader.user_public
        user = people[entry_id % len(people)]
        if action == "invitation.created":
            return "invitation", f"inv_{user[4:]}", None, {"roles": ["standard"]}
        if action == "role.assigned":
            return "user", user, None, {"roles": ["standard"]}
        return "user", user, {"title": ""}, {"title": "Engineer"}


def columns(names: str) -> tuple[str, ...]:
    return tuple(names.split())


ORG_COLUMNS = columns(
    "id uuid public_id parent_id root_id path depth name description status deployment "
    "country timezone plan settings tags customizations created_at modified_at deleted_at "
    "deleted_with version"
)
USER_COLUMNS = columns(
    "id public_id email email_normalized first_name last_name title status "
    "failed_logins created_at modified_at version"
)
MEMBER_COLUMNS = ("user_id", "org_id", "root_id", "created_at")
ROLE_COLUMNS = ("user_id", "org_id", "role")
KEY_COLUMNS = columns(
    "id public_id org_id root_id kind name key_hash hint scopes created_at revoked_at"
)
AUDIT_COLUMNS = ("id", *audit_service.COLUMNS)
EVENT_COLUMNS = columns(
    "id root_id idempotency_key org_id meter quantity occurred_at day received_at"
)
DAILY_COLUMNS = ("org_id", "meter", "day", "root_id", "quantity")
LOADED_TABLES = (
    orgs,
    org_tags,
    users,
    memberships,
    membership_roles,
    credentials,
    audit_log,
    audit_chain_heads,
    usage_events,
    usage_daily,
    usage_subtree_daily,
)


async def load(
    database_url: str, sizes: Sizes, *, seed: int = 6, say: Callable[[str], None] = print
) -> Loaded:
    """Load a migrated, bootstrapped orgplane database; returns counts, timings and targets."""
    sink = await open_sink(database_url)
    try:
        started = time.monotonic()
        say(
            f"[load] planning {sizes.orgs:,} orgs, {sizes.audit:,} audit entries, "
            f"{sizes.users:,} users, {sizes.keys:,} keys, {sizes.events:,} usage events"
        )
        loader = Loader(sink, sizes, seed, say)
        loader.loaded.seconds["plan"] = round(time.monotonic() - started, 1)
        return await loader.run()
    finally:
        await sink.close()
