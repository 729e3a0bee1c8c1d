"""Identifiers and secrets: public ids, and API key formats with a checksum.

A native key reads ``opk_<32 base62 characters><6 base62 checksum characters>``: the prefix
makes a leaked key recognisable to secret scanners, the checksum lets a typo be rejected without
touching the database, and only the sha256 of the whole key is stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import uuid
import zlib

_BASE62 = string.digits + string.ascii_letters
NATIVE_KEY_PREFIX = "opk_"
_BODY_LEN = 32
_CHECKSUM_LEN = 6


def new_uuid() -> str:
    return str(uuid.uuid4())


def new_public_id(prefix: str = "") -> str:
    """A short random id: 12 characters from [0-9a-z], about 62 bits."""
    alphabet = string.digits + string.ascii_lowercase
    return prefix + "".join(secrets.choice(alphabet) for _ in range(12))


def _base62(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, rem = divmod(number, 62)
        chars.append(_BASE62[rem])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_LEN)


def new_native_key() -> str:
    body = "".join(secrets.choice(_BASE62) for _ in range(_BODY_LEN))
    return f"{NATIVE_KEY_PREFIX}{body}{_checksum(body)}"


def native_key_well_formed(key: str) -> bool:
    if not key.startswith(NATIVE_KEY_PREFIX):
        return False
    rest = key[len(NATIVE_KEY_PREFIX) :]
    if len(rest) != _BODY_LEN + _CHECKSUM_LEN or any(c not in _BASE62 for c in rest):
        return False
    body, check = rest[:_BODY_LEN], rest[_BODY_LEN:]
    return secrets.compare_digest(_checksum(body), check)


# Sign-in sessions and one-time user tokens share the native key's shape under their own prefixes.
SESSION_TOKEN_PREFIX = "ops_"
RESET_TOKEN_PREFIX = "opr_"
EMAIL_TOKEN_PREFIX = "ope_"


def new_prefixed_token(prefix: str) -> str:
    body = "".join(secrets.choice(_BASE62) for _ in range(_BODY_LEN))
    return f"{prefix}{body}{_checksum(body)}"


def prefixed_token_well_formed(prefix: str, token: str) -> bool:
    if not token.startswith(prefix):
        return False
    rest = token[len(prefix) :]
    if len(rest) != _BODY_LEN + _CHECKSUM_LEN or any(c not in _BASE62 for c in rest):
        return False
    body, check = rest[:_BODY_LEN], rest[_BODY_LEN:]
    return secrets.compare_digest(_checksum(body), check)


_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def uuid_key_well_formed(key: str) -> bool:
    """A Make-style token: a canonical lower-case UUID4 string (36 characters)."""
    return len(key) == 36 and _UUID4.match(key) is not None


# A Datadog credential is a pair: an API key (32 hex) and an application key (40 hex).
# A Sumo Logic credential is a pair too: an access id (``su`` + 12 base62) and a 64-character
# access key. orgplane stores one hash per credential: that of ``first:second``.
_DATADOG_PAIR = re.compile(r"^[0-9a-f]{32}:[0-9a-f]{40}$")
_SUMO_PAIR = re.compile(r"^su[0-9A-Za-z]{12}:[0-9A-Za-z]{64}$")


def new_datadog_pair() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(20)


def new_sumo_pair() -> tuple[str, str]:
    access_id = "su" + "".join(secrets.choice(_BASE62) for _ in range(12))
    return access_id, "".join(secrets.choice(_BASE62) for _ in range(64))


def pair_secret(first: str, second: str) -> str:
    """The one secret a two-part credential is stored and looked up as."""
    return f"{first}:{second}"


def datadog_pair_well_formed(secret: str) -> bool:
    return len(secret) == 73 and _DATADOG_PAIR.match(secret) is not None


def sumo_pair_well_formed(secret: str) -> bool:
    return len(secret) == 79 and _SUMO_PAIR.match(secret) is not None


def hash_secret(secret: str) -> str:
    """The stored form of a key. Keys carry ~190 random bits, so a plain sha256 is enough."""
    return hashlib.sha256(secret.encode()).hexdigest()


def sumo_org_id(deployment: str, org_key: int) -> str:
    """Sumo Logic's face of an org: ``<deployment>-<16 upper-case hex digits>``."""
    return f"{deployment}-{org_key:016X}"
