"""Secrets the server must read back (TOTP seeds, webhook signing secrets), sealed at rest.

A value is sealed with AES-256-GCM under a key derived by HKDF-SHA256 from the installation's
``ORGPLANE_SECRET_KEY``; each kind of secret derives its own key (``purpose``) and binds the
sealed value to its owner's row (``bound_to``, the associated data), so a sealed value copied
onto another row, or used as another kind of secret, does not open. A database dump alone
therefore yields no secret. Changing ``ORGPLANE_SECRET_KEY`` leaves every sealed value unreadable.
"""

from __future__ import annotations

import base64
import functools
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# The version of the sealing scheme, first in every sealed value (a later scheme can coexist).
SEALED_PREFIX = "v1."
_NONCE_BYTES = 12


class Unsealable(Exception):
    """A sealed value that does not open: sealed under another secret key, or damaged."""


@functools.lru_cache(maxsize=16)
def _cipher(secret_key: str, purpose: str) -> AESGCM:
    # Imported on first use: OpenSSL's bindings (~6 MB per process) are loaded only by a server
    # that seals or opens a secret (two-factor sign-in, webhooks).
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
        secret_key.encode()
    )
    return AESGCM(key)


def seal(value: str, *, purpose: str, bound_to: str, secret_key: str) -> str:
    """``value`` as stored: ``v1.`` + base64url(nonce + AES-GCM ciphertext)."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    sealed = _cipher(secret_key, purpose).encrypt(nonce, value.encode(), bound_to.encode())
    return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def open_sealed(stored: str, *, purpose: str, bound_to: str, secret_key: str) -> str:
    """The value ``seal`` stored for this purpose and owner, or ``Unsealable``."""
    from cryptography.exceptions import InvalidTag

    if not stored.startswith(SEALED_PREFIX):
        raise Unsealable("unknown sealing scheme")
    try:
        raw = base64.urlsafe_b64decode(stored[len(SEALED_PREFIX) :])
        nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        return _cipher(secret_key, purpose).decrypt(nonce, sealed, bound_to.encode()).decode()
    except (InvalidTag, ValueError) as exc:
        raise Unsealable(str(exc) or type(exc).__name__) from None
