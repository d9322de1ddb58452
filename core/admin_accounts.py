"""Admin accounts and API tokens, kept in Redis so every web process sees the same ones.

    exsync:admin:user:{email}       hash: password (werkzeug scrypt hash), role, created_at
    exsync:admin:token:{sha256}     hash: name, created_at (the token itself is never stored)
    exsync:admin:tokens             hash: name -> sha256, to list and revoke by name

Only the `admin` role reaches settings and the admin API; a `staff` account can sign in and is
shown why it is refused (403), which is what Coconut does for non-admin users.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

import redis
from werkzeug.security import check_password_hash, generate_password_hash

from core import store

ROLES = ("admin", "staff")
MIN_PASSWORD = 12
TOKEN_PREFIX = "exsa_"  # noqa: S105 (a marker that says what the string is, not a secret)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Checked when the email is unknown, so a wrong email costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-password", method="scrypt")


class AdminUserError(ValueError):
    """Bad input to an admin-account chore; the message says what to change."""


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise AdminUserError(f"not an email address: {email!r}")
    return email


def add_user(conn: redis.Redis, email: str, password: str, role: str = "admin") -> str:
    """Create or replace the account; returns the normalised email."""
    email = normalise_email(email)
    if role not in ROLES:
        raise AdminUserError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if len(password) < MIN_PASSWORD:
        raise AdminUserError(f"the password must have at least {MIN_PASSWORD} characters")
    conn.hset(
        store.admin_user_key(email),
        mapping={
            "password": generate_password_hash(password, method="scrypt"),
            "role": role,
            "created_at": int(time.time()),
        },
    )
    return email


def remove_user(conn: redis.Redis, email: str) -> bool:
    return bool(conn.delete(store.admin_user_key(normalise_email(email))))


def user_role(conn: redis.Redis, email: str) -> str | None:
    """The account's role, or None when it no longer exists."""
    role = conn.hget(store.admin_user_key(email), "role")
    return role.decode() if role else None


def check_password(conn: redis.Redis, email: str, password: str) -> bool:
    try:
        email = normalise_email(email)
    except AdminUserError:
        return False
    stored = conn.hget(store.admin_user_key(email), "password")
    if stored is None:
        check_password_hash(_DUMMY_HASH, password)
        return False
    return check_password_hash(stored.decode(), password)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_token(conn: redis.Redis, name: str) -> str:
    """A new API token for scripts; shown once, stored only as its SHA-256."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise AdminUserError(f"token names use letters, digits, '.', '_' and '-', got {name!r}")
    if conn.hexists(store.admin_tokens_key(), name):
        raise AdminUserError(f"a token named {name!r} exists; revoke it first")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    digest = _digest(token)
    pipe = conn.pipeline()
    pipe.hset(store.admin_token_key(digest), mapping={"name": name, "created_at": int(time.time())})
    pipe.hset(store.admin_tokens_key(), name, digest)
    pipe.execute()
    return token


def revoke_token(conn: redis.Redis, name: str) -> bool:
    digest = conn.hget(store.admin_tokens_key(), name)
    if digest is None:
        return False
    conn.delete(store.admin_token_key(digest.decode()))
    conn.hdel(store.admin_tokens_key(), name)
    return True


def token_name(conn: redis.Redis, token: str) -> str | None:
    """The name of the API token, or None when it is unknown or revoked."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    digest = _digest(token)
    name = conn.hget(store.admin_token_key(digest), "name")
    # The lookup is by digest; compare again in constant time so equality is never `==`.
    stored = conn.hget(store.admin_tokens_key(), name.decode()) if name else None
    if name is None or stored is None or not hmac.compare_digest(stored.decode(), digest):
        return None
    return name.decode()
