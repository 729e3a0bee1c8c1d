"""The second factor's primitives, with no database: TOTP seeds and codes (RFC 6238, pyotp),
the seed sealed at rest, the enrolment QR code, and recovery codes.

Seeds at rest. A TOTP seed is the one secret the server must read back (it computes the codes
the authenticator app shows), so unlike passwords, keys and recovery codes it cannot be stored
as a hash. It is sealed with AES-256-GCM under a key derived by HKDF-SHA256 from the server's
``ORGPLANE_SECRET_KEY``, with the user's id as associated data (a sealed seed copied onto another
user's row does not open). A database dump alone therefore yields no seed. Key rotation is out of
scope: changing ``ORGPLANE_SECRET_KEY`` leaves every enrolled user's seed unreadable, their
password sign-in is refused (logged as such) until an administrator turns their second factor
off (``users.disable_mfa``) and they enrol again.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import secrets
from datetime import datetime

import pyotp
import segno

from orgplane.core import sealing

ISSUER = "orgplane"
# Codes of the step before and after the current one pass too: clocks drift, people type slowly.
DRIFT_STEPS = 1
RECOVERY_CODES = 10
# 10 characters of base32: 50 random bits per recovery code, shown as "xxxxx-xxxxx".
_RECOVERY_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_RECOVERY_LENGTH = 10
_TOTP_CODE = re.compile(r"[0-9]{6}")
_RECOVERY_CODE = re.compile(f"[{_RECOVERY_ALPHABET}]{{{_RECOVERY_LENGTH}}}")
# HKDF's info for the seeds' key: the scheme of sealed seeds since they were first stored.
_SEAL_PURPOSE = "orgplane totp seed v1"

# A sealed seed that does not open (kept under its name: the sign-in code catches it).
SeedUnreadable = sealing.Unsealable


def new_seed() -> str:
    """A fresh random seed: 32 base32 characters (160 bits, RFC 4226's recommendation)."""
    return pyotp.random_base32()


def _user_bound(user_pk: int) -> str:
    return f"user:{user_pk}"


def seal(seed: str, *, user_pk: int, secret_key: str) -> str:
    """The seed as stored (``core.sealing``), bound to its user."""
    return sealing.seal(
        seed, purpose=_SEAL_PURPOSE, bound_to=_user_bound(user_pk), secret_key=secret_key
    )


def open_sealed(stored: str, *, user_pk: int, secret_key: str) -> str:
    """The seed ``seal`` stored for this user, or ``SeedUnreadable``."""
    return sealing.open_sealed(
        stored, purpose=_SEAL_PURPOSE, bound_to=_user_bound(user_pk), secret_key=secret_key
    )


def provisioning_uri(seed: str, account: str) -> str:
    """The ``otpauth://totp/...`` URI an authenticator app reads (from the QR code)."""
    return pyotp.TOTP(seed).provisioning_uri(name=account, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The URI as a QR code, an SVG document rendered here (no third party sees the seed)."""
    out = io.BytesIO()
    segno.make_qr(uri, error="m").save(out, kind="svg", scale=4, xmldecl=False, svgclass=None)
    return out.getvalue().decode()


def normalize(code: str) -> str:
    """A code as typed: spaces and hyphens dropped, lower case."""
    return re.sub(r"[\s-]", "", code).lower()


def is_totp_code(code: str) -> bool:
    """Whether a normalized code has a TOTP code's shape (6 digits)."""
    return _TOTP_CODE.fullmatch(code) is not None


def is_recovery_code(code: str) -> bool:
    """Whether a normalized code has a recovery code's shape."""
    return _RECOVERY_CODE.fullmatch(code) is not None


def matching_step(seed: str, code: str, now: datetime) -> int | None:
    """The time step (within ``DRIFT_STEPS`` of ``now``) whose code is ``code``, or None.
    Every candidate is compared, in constant time, whichever matches."""
    totp = pyotp.TOTP(seed)
    current = totp.timecode(now)
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


def new_recovery_codes() -> list[str]:
    """``RECOVERY_CODES`` fresh codes, as shown to the user (``xxxxx-xxxxx``)."""
    codes = []
    for _ in range(RECOVERY_CODES):
        body = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        codes.append(f"{body[:5]}-{body[5:]}")
    return codes


def recovery_hash(code: str) -> str:
    """The stored form of a recovery code (as shown, or as typed)."""
    return hashlib.sha256(normalize(code).encode()).hexdigest()
