"""Alembic environment: runs migrations over the async engine of either database."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from orgplane.db.engine import create_engine
from orgplane.models import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # Told each migration as it is applied (``db.migrate.upgrade`` reports them).
        on_version_apply=config.attributes.get("on_version_apply"),
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("orgplane migrations run online only")
asyncio.run(_run_async())
