"""NATS with JetStream for the sink's tests: whether the server answers, and a stream of the
test's own.

The tests publish to the NATS server at ORGPLANE_TEST_NATS_URL (default nats://127.0.0.1:4222,
JetStream enabled). Without it they are skipped with a loud message, unless
ORGPLANE_REQUIRE_NATS=1 (CI), which makes them fail instead. Each test has a stream and a
subject prefix of its own, so test workers running side by side never see each other's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from dataclasses import dataclass
from typing import Any

import nats
import nats.js.errors

from support.harness import run_in_thread

NATS_URL = os.environ.get("ORGPLANE_TEST_NATS_URL", "nats://127.0.0.1:4222")
REQUIRE_NATS = os.environ.get("ORGPLANE_REQUIRE_NATS") == "1"
_state: dict[str, str | None] = {}


def nats_unreachable() -> str | None:
    """None when NATS answers with JetStream enabled, else why not."""
    if "error" not in _state:

        async def probe() -> None:
            nc = await nats.connect(NATS_URL, allow_reconnect=False, connect_timeout=3)
            try:
                await nc.jetstream().account_info()
            finally:
                await nc.close()

        try:
            run_in_thread(lambda: asyncio.run(asyncio.wait_for(probe(), timeout=5)))
            _state["error"] = None
        except Exception as exc:
            _state["error"] = f"{type(exc).__name__}: {exc}"
    return _state["error"]


@dataclass
class Stream:
    """A stream of the test's own: its name, the subject prefix it captures, and a client."""

    name: str
    prefix: str
    nc: Any
    js: Any

    def settings(self) -> dict[str, Any]:
        """The settings that point the sink at it."""
        return {
            "events_nats_url": NATS_URL,
            "events_nats_stream": self.name,
            "events_nats_subject_prefix": self.prefix,
        }

    async def count(self) -> int:
        try:
            info = await self.js.stream_info(self.name)
        except nats.js.errors.NotFoundError:
            return 0
        return int(info.state.messages)

    async def messages(self) -> list[Any]:
        """Every message in the stream, in its order."""
        return [await self.js.get_msg(self.name, seq) for seq in range(1, await self.count() + 1)]


async def own_stream() -> Stream:
    unique = uuid.uuid4().hex[:12]
    nc = await nats.connect(NATS_URL, allow_reconnect=False, connect_timeout=3)
    return Stream(name=f"TEST_{unique}", prefix=f"t{unique}", nc=nc, js=nc.jetstream())


async def drop(stream: Stream) -> None:
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await stream.js.delete_stream(stream.name)
    await stream.nc.close()
