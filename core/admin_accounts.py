"""Admin accounts, their sessions and API tokens, kept in Redis so every web process sees the
same ones.

    exsync:admin:user:{email}       hash: password (werkzeug scrypt hash), role, created_at,
                                    session_epoch (new and random each time the password is set)
    exsync:admin:session:{id}       JSON: the email and the session_epoch it signed in under
    exsync:admin:token:{sha256}     hash: name, created_at (the token itself is never stored)
    exsync:admin:tokens             hash: name -> sha256, to list and revoke by name

Setting a password (`exsync admin add-user` on an existing account) ends every session of that
account, wherever it is: a session counts only while its epoch is the account's. Removing the
account ends them too. Only the `admin` role reaches settings and the admin API; a `staff`
account can sign in and is shown why it is refused (403), which is what Coconut does for
non-admin users.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from typing import NamedTuple

import redis
from werkzeug.security import check_password_hash, generate_password_hash

from core import store

ROLES = ("admin", "staff")
MIN_PASSWORD = 12
TOKEN_PREFIX = "exsa_"  # noqa: S105 (a marker that says what the string is, not a secret)
# RFC 5321 §4.5.3.1.3: a path is at most 256 octets, its angle brackets included. Checked
# before anything else, so a huge value never reaches the pattern below or a Redis key.
MAX_EMAIL = 254
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Checked when the email is unknown, so a wrong email costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-password", method="scrypt")


class AdminUserError(ValueError):
    """Bad input to an admin-account chore; the message says what to change."""


class Account(NamedTuple):
    email: str
    role: str


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > MAX_EMAIL:
        raise AdminUserError(f"an email address has at most {MAX_EMAIL} characters")
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
            "session_epoch": secrets.token_hex(16),
        },
    )
    return email


def remove_user(conn: redis.Redis, email: str) -> bool:
    return bool(conn.delete(store.admin_user_key(normalise_email(email))))


def sign_in(conn: redis.Redis, email: str, password: str, seconds: int) -> str | None:
    """A new session id (valid for `seconds`) when the password is right, else None."""
    try:
        email = normalise_email(email)
    except AdminUserError:
        return None
    # The epoch is read with the hash it belongs to: a password set while this sign-in checks
    # the old one ends the session it is about to open.
    stored, epoch = conn.hmget(store.admin_user_key(email), "password", "session_epoch")
    if stored is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(stored.decode(), password):
        return None
    sid = secrets.token_urlsafe(32)
    record = {"email": email, "epoch": epoch.decode() if epoch else ""}
    conn.set(store.admin_session_key(sid), json.dumps(record), ex=seconds)
    return sid


def session_account(conn: redis.Redis, sid: str) -> Account | None:
    """The account of a live session, or None: unknown or expired session, account removed,
    or its password set since the session began."""
    raw = conn.get(store.admin_session_key(sid))
    try:
        record = json.loads(raw) if raw else None
    except ValueError:
        return None  # written by an older version, before sessions carried an epoch
    if not isinstance(record, dict):
        return None
    email = str(record.get("email", ""))
    role, epoch = conn.hmget(store.admin_user_key(email), "role", "session_epoch")
    current = epoch.decode() if epoch else ""
    if role is None or not hmac.compare_digest(current, str(record.get("epoch", ""))):
        return None
    return Account(email, role.decode())


def sign_out(conn: redis.Redis, sid: str) -> None:
    conn.delete(store.admin_session_key(sid))


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
