"""The ``orgplane`` command: serve, worker, migrate, bootstrap, keys, orgs, audit, access-log."""

from __future__ import annotations

import asyncio
import enum
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any, TypeVar

import sqlalchemy as sa
import typer
from sqlalchemy.engine import make_url

from orgplane.config import Settings
from orgplane.core.access import scopes as scope_catalog
from orgplane.core.access.principal import Actor
from orgplane.core.audit import service as audit
from orgplane.core.errors import InvalidInput, OrgplaneError
from orgplane.db.engine import Database
from orgplane.models.base import utcnow

app = typer.Typer(
    help="orgplane: a control plane for trees of organizations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"orgplane {package_version('orgplane')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """orgplane: a control plane for trees of organizations."""


keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
orgs_app = typer.Typer(help="Inspect and create organizations.", no_args_is_help=True)
audit_app = typer.Typer(help="Check the audit log.", no_args_is_help=True)
limits_app = typer.Typer(help="Set the limits of tenant roots.", no_args_is_help=True)
ledger_app = typer.Typer(help="Check the allocation ledger.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(orgs_app, name="orgs")
app.add_typer(audit_app, name="audit")
app.add_typer(limits_app, name="limits")
app.add_typer(ledger_app, name="ledger")

T = TypeVar("T")
DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", envvar="ORGPLANE_DATABASE_URL", help="Database URL."),
]


def _settings(database_url: str | None) -> Settings:
    if database_url:
        os.environ["ORGPLANE_DATABASE_URL"] = database_url
    try:
        return Settings()
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _with_db(
    database_url: str | None, fn: Callable[[Database], Awaitable[T]], *, uvloop: bool = False
) -> T:
    """``fn`` with the database, on an event loop of its own (uvloop's for the long-running
    commands: it costs the worker's deliveries less CPU than asyncio's)."""
    settings = _settings(database_url)
    _refuse_missing_sqlite_file(settings.database_url)

    async def run() -> T:
        db = Database(settings.database_url)
        db.before_commit = audit.append_pending
        try:
            return await fn(db)
        finally:
            await db.dispose()

    try:
        if uvloop:
            import uvloop as fast_loop

            return fast_loop.run(run())
        return asyncio.run(run())
    except OrgplaneError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:
        _exit_on_database_problem(settings.database_url, exc)
        raise


def _safe_url(url: str) -> str:
    """The database URL as it may be printed: its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(an unreadable database URL)"


def _refuse_missing_sqlite_file(url: str) -> None:
    """A command other than migrate on a SQLite file that does not exist would create an empty
    database there and fail on its first table: say where it looked and what to do instead."""
    try:
        parsed = make_url(url)
    except Exception:
        typer.echo(f"error: {_safe_url(url)} is not a database URL", err=True)
        raise typer.Exit(2) from None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database).resolve()
    if not path.exists():
        typer.echo(
            f"error: no database at {path}: run `orgplane migrate` to create it there, or point "
            "--database-url / ORGPLANE_DATABASE_URL at yours",
            err=True,
        )
        raise typer.Exit(2)


# The driver's errors (asyncpg's, named: the CLI does not import the driver) that mean the
# server refused the connection itself.
_CONNECT_ERRORS = frozenset(
    {
        "InvalidCatalogNameError",
        "InvalidPasswordError",
        "InvalidAuthorizationSpecificationError",
        "CannotConnectNowError",
    }
)


def _database_problem(exc: BaseException) -> str | None:
    """What keeps the command from the database, when that is what went wrong (else None)."""
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen)
        if "no such table" in text or ("does not exist" in text and "relation" in text):
            return "not migrated: run `orgplane migrate`"
        if isinstance(seen, OSError):
            return f"cannot connect ({seen.strerror or text})"
        if type(seen).__name__ in _CONNECT_ERRORS:
            return f"cannot connect ({text})"
        seen = seen.__cause__ or seen.__context__
    return None


def _exit_on_database_problem(url: str, exc: BaseException) -> None:
    """One line and exit status 2 when ``exc`` is the database's (unreachable, not migrated)."""
    problem = _database_problem(exc)
    if problem is not None:
        typer.echo(f"error: database {_safe_url(url)}: {problem}", err=True)
        raise typer.Exit(2) from None


@app.command()
def migrate(database_url: DatabaseUrl = None) -> None:
    """Bring the database schema up to date."""
    from orgplane.db.migrate import upgrade

    settings = _settings(database_url)
    try:
        applied = upgrade(settings.database_url)
    except Exception as exc:
        _exit_on_database_problem(settings.database_url, exc)
        raise
    if applied:
        typer.echo(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    typer.echo("database is up to date")


@app.command()
def bootstrap(
    database_url: DatabaseUrl = None,
    name: Annotated[str, typer.Option(help="Name of the root organization.")] = "Root",
    email: Annotated[
        str,
        typer.Option(
            help="The root's first owner, invited to the console: the printed link sets their "
            "password. Empty: no console user.",
        ),
    ] = "admin@example.com",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """On an empty database: create the root org, an admin key (printed once) and the root's
    first owner, invited to the console."""
    from orgplane.core.bootstrap import bootstrap as run_bootstrap

    done = _with_db(
        database_url, lambda db: run_bootstrap(db, name=name, owner_email=email or None)
    )
    if done is None:
        if as_json:
            typer.echo(json.dumps({"org_id": None, "api_key": None, "bootstrapped": False}))
        else:
            typer.echo(
                "already bootstrapped: the database has organizations; nothing changed. "
                "For another admin key of a root: orgplane keys create ROOT_ORG_ID"
            )
        return
    link = None
    if done.owner_token is not None:
        settings = _settings(database_url)
        base = settings.public_url or f"http://{settings.host}:{settings.port}"
        link = f"{base.rstrip('/')}/console/invitations/{done.owner_token}"
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "org_id": done.org_id,
                    "api_key": done.api_key,
                    "owner_email": done.owner_email,
                    "console_link": link,
                }
            )
        )
        return
    typer.echo(f"root org:   {done.org_id}")
    typer.echo(f"admin key:  {done.api_key}")
    typer.echo("The key is shown only this once; store it now.")
    if link is not None:
        typer.echo(f"console:    {link}")
        typer.echo(
            f"Open it to set {done.owner_email}'s password (it works once, for 7 days), then "
            "sign in at /console."
        )


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Address to bind.", envvar="ORGPLANE_HOST", show_default="127.0.0.1"),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port.", envvar="ORGPLANE_PORT", show_default="8000")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes.", envvar="ORGPLANE_WORKERS", show_default="1"),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(help="granian or uvicorn.", envvar="ORGPLANE_SERVER", show_default="granian"),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Serve the API (granian by default, or uvicorn with uvloop and httptools)."""
    settings = _settings(database_url)
    host = host or settings.host
    port = port or settings.port
    workers = workers or settings.workers
    server = server or settings.server
    if workers > 1 and not settings.redis_url:
        typer.echo(
            "warning: several workers without ORGPLANE_REDIS_URL keep separate rate-limit counters",
            err=True,
        )
    busy = _port_in_use(host, port)
    if busy is not None:
        # The servers bind with SO_REUSEPORT: a second one would share the port (and its
        # traffic) with whatever already listens there, or fail with a long traceback.
        typer.echo(
            f"error: cannot serve on {host}:{port}: {busy}; another orgplane or another program "
            "is listening there (choose another with --port or ORGPLANE_PORT)",
            err=True,
        )
        raise typer.Exit(2)
    # The database answers and is migrated, or one line says why not (instead of a server that
    # answers 500).
    _with_db(database_url, _check_schema)
    typer.echo(f"orgplane serving on http://{host}:{port} ({server}, {workers} worker(s))")
    if server == "uvicorn":
        import uvicorn

        uvicorn.run(
            "orgplane.asgi:app",
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level=settings.log_level,
        )
        return
    if server != "granian":
        typer.echo("error: --server must be granian or uvicorn", err=True)
        raise typer.Exit(2)
    from granian import Granian
    from granian.constants import Interfaces, Loops

    Granian(
        "orgplane.asgi:app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        log_access=False,
    ).serve()


@app.command()
def worker(database_url: DatabaseUrl = None) -> None:
    """Dispatch and deliver webhooks, and publish events to NATS when ORGPLANE_EVENTS_NATS_URL
    is set, until SIGTERM or SIGINT (run any number on PostgreSQL; set
    ORGPLANE_WEBHOOK_DELIVERY=off on the servers when workers do it)."""
    import signal

    from orgplane.core.events.jetstream import NatsSink, redacted
    from orgplane.core.webhooks.worker import Worker
    from orgplane.logging import configure as configure_logging

    settings = _settings(database_url)
    configure_logging(settings.log_level, settings.log_format)

    async def run(db: Database) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await _check_schema(db)
        typer.echo("orgplane worker: delivering webhooks (SIGTERM or Ctrl-C stops)", err=True)
        jobs = [Worker(db, settings).run(stop)]
        if settings.events_nats_url:
            servers = redacted(settings.events_nats_url)
            typer.echo(f"orgplane worker: publishing events to NATS at {servers}", err=True)
            jobs.append(NatsSink(db, settings).run(stop))
        await asyncio.gather(*jobs)

    _with_db(database_url, run, uvloop=True)
    typer.echo("orgplane worker: stopped", err=True)


async def _check_schema(db: Database) -> None:
    async with db.read() as conn:
        await conn.execute(sa.text("SELECT 1 FROM orgs LIMIT 1"))


def _port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound (an address in use, a wrong host), or None."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except OSError as exc:
        return f"cannot resolve {host!r} ({exc.strerror or exc})"
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


@keys_app.command("create")
def keys_create(
    org: Annotated[str, typer.Argument(help="Public id of the organization.")],
    name: Annotated[str, typer.Option(help="A name to tell the key apart.")] = "cli",
    scope: Annotated[
        list[str] | None, typer.Option(help="A scope; repeat for several. Default: *")
    ] = None,
    expires: Annotated[datetime | None, typer.Option(help="Expiry (ISO 8601, UTC).")] = None,
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create an API key for any org (operator access: no key needed)."""
    from orgplane.core.credentials import service as credentials

    try:
        scopes = scope_catalog.validate(scope or ["*"])
    except OrgplaneError as exc:
        reasons = "; ".join(e.message for e in exc.errors) or exc.detail
        typer.echo(f"error: {reasons}", err=True)
        raise typer.Exit(2) from None
    # The option is documented as UTC: a naive value is UTC, not the local zone.
    expires_at = (
        None
        if expires is None
        else expires.replace(tzinfo=UTC)
        if expires.tzinfo is None
        else expires
    )

    def run(db: Database) -> Awaitable[Any]:
        if expires_at is not None and expires_at <= utcnow():
            raise InvalidInput.for_field("expires", "must be in the future")
        return db.transaction(
            credentials.mint,
            actor=Actor.system("cli"),
            org_ref=org,
            name=name,
            scopes=scopes,
            expires_at=expires_at,
        )

    created = _with_db(database_url, run)
    if as_json:
        typer.echo(json.dumps({"key_id": created.row.public_id, "api_key": created.secret}))
    else:
        typer.echo(f"key id:  {created.row.public_id}\napi key: {created.secret}")


@keys_app.command("list")
def keys_list(
    org: Annotated[str, typer.Argument(help="Public id of the organization.")],
    database_url: DatabaseUrl = None,
) -> None:
    """List the keys of an org (never their secrets)."""
    from orgplane.core.credentials import service as credentials

    async def run(db: Database) -> list[Any]:
        async with db.read() as conn:
            return await credentials.every_key(conn, org)

    for row in _with_db(database_url, run):
        state = "revoked" if row.revoked_at else "active"
        typer.echo(f"{row.public_id}  {row.hint}…  {state:7}  {' '.join(row.scopes)}  {row.name}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key at once (running servers notice within their key cache TTL)."""
    from orgplane.core.credentials import service as credentials

    async def run(db: Database) -> bool:
        revoked = await db.transaction(
            credentials.revoke, actor=Actor.system("cli"), key_ref=key_id
        )
        return revoked.changed

    changed = _with_db(database_url, run)
    typer.echo(f"revoked {key_id}" if changed else f"{key_id} was already revoked")


@orgs_app.command("tree")
def orgs_tree(
    root: Annotated[
        str | None, typer.Argument(help="Public id of the top org (default: all roots).")
    ] = None,
    database_url: DatabaseUrl = None,
    include_deleted: Annotated[
        bool, typer.Option("--deleted", help="Show deleted orgs too.")
    ] = False,
) -> None:
    """Print the tree of organizations."""
    from orgplane.core import operator

    async def run(db: Database) -> list[Any]:
        async with db.read() as conn:
            return await operator.org_tree(conn, root_ref=root, include_deleted=include_deleted)

    rows = _with_db(database_url, run)
    base = rows[0].depth if rows else 0
    for row in rows:
        marks = "" if row.status == "active" else f" [{row.status}]"
        marks += " [deleted]" if row.deleted_at else ""
        typer.echo(f"{'  ' * (row.depth - base)}{row.name} ({row.public_id}){marks}")


@orgs_app.command("create-root")
def orgs_create_root(
    name: Annotated[str, typer.Argument(help="Name of the new tenant root.")],
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create another tenant tree with its own admin key (printed once)."""
    from orgplane.core.bootstrap import create_root_with_admin_key

    done = _with_db(
        database_url, lambda db: db.transaction(create_root_with_admin_key, name=name, label="cli")
    )
    if as_json:
        typer.echo(json.dumps({"org_id": done.org_id, "api_key": done.api_key}))
    else:
        typer.echo(f"root org:   {done.org_id}\nadmin key:  {done.api_key}")


@audit_app.command("verify")
def audit_verify(database_url: DatabaseUrl = None) -> None:
    """Recompute every tenant's audit hash chain; exit 1 at the first broken link."""

    async def run(db: Database) -> list[audit.ChainBreak]:
        async with db.read() as conn:
            return await audit.verify(conn)

    breaks = _with_db(database_url, run)
    if not breaks:
        typer.echo("audit log verified: every chain is intact")
        return
    for b in breaks:
        where = f"entry id {b.entry_id}" if b.entry_id is not None else "end of chain"
        typer.echo(f"tenant root {b.root_id}: broken at seq {b.seq} ({where}): {b.reason}")
    sys.exit(1)


class AccessStatus(enum.StrEnum):
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"


def _instant(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 date or time (UTC unless it names an offset), as an aware UTC datetime."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time such as 2026-01-31T12:00:00Z", param_hint=option
        ) from None
    return parsed


@app.command("access-log")
def access_log(
    database_url: DatabaseUrl = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Entries at or after this ISO 8601 time.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Entries before this ISO 8601 time.")
    ] = None,
    status: Annotated[
        AccessStatus | None, typer.Option("--status", help="Only successes or only failures.")
    ] = None,
    org: Annotated[
        str | None, typer.Option("--org", help="Only this organization's entries (public id).")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="At most this many entries.")
    ] = 100,
) -> None:
    """Print authentication attempts across the installation, newest first, one JSON object a
    line (NDJSON), including failures with unknown keys, which belong to no organization."""
    from orgplane.core.audit.queries import LogFilters, installation_access_log

    filters = LogFilters(
        since=_instant(since, "--since"),
        until=_instant(until, "--until"),
        status=status.value if status is not None else None,
    )

    async def run(db: Database) -> list[Any]:
        async with db.read() as conn:
            return await installation_access_log(conn, filters, org_ref=org, limit=limit)

    for row in _with_db(database_url, run):
        entry = {
            "id": row.id,
            "at": row.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "status": row.status,
            "action": row.action,
            "actor": row.actor,
            "key_id": row.key_id,
            "org_id": row.org_public_id,
            "method": row.method,
            "path": row.path,
            "ip": row.ip,
            "user_agent": row.user_agent,
            "detail": row.detail,
        }
        typer.echo(json.dumps(entry, ensure_ascii=False))


@limits_app.command("set")
def limits_set(
    org: Annotated[str, typer.Argument(help="Public id of a tenant root organization.")],
    meter: Annotated[str, typer.Argument(help="Meter name, e.g. operations.")],
    amount: Annotated[int, typer.Argument(help="The new limit.", min=0)],
    database_url: DatabaseUrl = None,
) -> None:
    """Set a tenant root's limit for a meter (operator access: no key needed)."""
    from orgplane.core import operator

    def run(db: Database) -> Awaitable[Any]:
        return db.transaction(
            operator.set_root_limit,
            actor=Actor.system("cli"),
            org_ref=org,
            meter=meter,
            amount=amount,
        )

    balance = _with_db(database_url, run)
    typer.echo(
        f"{org} {meter}: limit {balance.amount}, allocated {balance.allocated}, "
        f"available {balance.available}"
    )


@ledger_app.command("verify")
def ledger_verify(database_url: DatabaseUrl = None) -> None:
    """Recompute every balance from the ledger; exit 1 on any disagreement."""
    from orgplane.core.credits.ledger import verify

    async def run(db: Database) -> list[Any]:
        async with db.read() as conn:
            return await verify(conn)

    problems = _with_db(database_url, run)
    if not problems:
        typer.echo("ledger verified: every balance agrees with the ledger")
        return
    for problem in problems:
        typer.echo(str(problem))
    sys.exit(1)


if __name__ == "__main__":
    app()
