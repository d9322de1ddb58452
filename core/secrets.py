"""Secrets at rest: the client secret, the service account's refresh token, sign-in state.

Everything secret that the service keeps in Redis is encrypted with Fernet (AES-128-CBC with an
HMAC-SHA256, from `cryptography`) under a key from `EXSYNC_SECRET_KEY`, so a Redis dump or an
AOF file on a backup tape holds no usable credential. The setting takes one key, or several
separated by commas to rotate: the first encrypts, every one decrypts, so an admin adds the new
key in front, lets the service re-save, then drops the old one.

    SecretKeyError      the setting is not a list of Fernet keys (never quotes the value)
    SecretUnreadable    a stored value was encrypted under a key no longer configured

The web process also signs its session cookies with a key derived from the same setting
(HKDF, its own purpose label), so there is one secret to provision, not two.

Every plaintext that goes in or comes out joins the process's log redaction (core.logs), so a
secret typed in the settings page or a refresh token never reaches a log line, not even inside
an exception's message.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core import logs

SETTING = "EXSYNC_SECRET_KEY"


class SecretKeyError(ValueError):
    """The configured key is unusable; the message says how to make one."""


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted with the configured keys (key changed or lost)."""


def generate_key() -> str:
    return Fernet.generate_key().decode()


def check_keys(value: str) -> list[bytes]:
    """The keys in the setting, or SecretKeyError naming which one is bad (by position)."""
    keys = [part.strip().encode() for part in value.split(",") if part.strip()]
    if not keys:
        raise SecretKeyError(f"{SETTING} is empty; {_HOW}")
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            raise SecretKeyError(
                f"{SETTING} key #{position} is not a Fernet key (32 url-safe base64 bytes); {_HOW}"
            ) from None
    return keys


_HOW = (
    "make one with: python -c "
    "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)


class SecretBox:
    """Encrypts and decrypts short strings under the configured key(s)."""

    def __init__(self, setting: str) -> None:
        keys = check_keys(setting)
        self._fernet = MultiFernet([Fernet(key) for key in keys])
        self._first = keys[0]

    def __repr__(self) -> str:
        return "SecretBox(<redacted>)"

    def encrypt(self, plaintext: str) -> str:
        logs.redact_rotating(plaintext)
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str | bytes) -> str:
        raw = token.encode() if isinstance(token, str) else token
        try:
            plaintext = self._fernet.decrypt(raw).decode()
        except InvalidToken:
            raise SecretUnreadable(
                f"a stored secret cannot be decrypted with {SETTING}: was the key changed? "
                "Put the old key after the new one (comma-separated), or enter the secret again"
            ) from None
        logs.redact_rotating(plaintext)
        return plaintext

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for another use (cookie signing), independent of the Fernet key."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
        return hkdf.derive(self._first)
