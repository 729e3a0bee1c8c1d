"""Standard Webhooks signing (https://www.standardwebhooks.com): secrets and signatures.

A secret is ``whsec_`` + base64 of 32 random bytes. A request is signed with HMAC-SHA256 of
``{webhook-id}.{webhook-timestamp}.{body}`` under the secret's bytes; ``webhook-signature`` holds
``v1,<base64 signature>`` for each secret that signs, space-separated (two during a rotation).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from orgplane import __version__

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
USER_AGENT = f"orgplane-webhooks/{__version__}"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@functools.lru_cache(maxsize=1024)
def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,...`` per secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.digest(_key(s), signed, hashlib.sha256)).decode()
        for s in secrets_
    )


def headers(secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one delivery."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secrets_, msg_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
