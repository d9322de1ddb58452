"""Sign-in throttling: growing delays per client address and per account, never a lock.

Every sign-in that gets as far as checking a password takes a number in two counts: one for
the client's address (an IPv6 address by its /64, which one machine can pick from), one for the
account it names, known or not (the answer must not tell which). A count's first attempts are
free; after them, each attempt waits a delay after the one before, 1 s, 2 s, 4 s, ... doubling
up to a cap. A count is forgotten a day after its last attempt.

    by address   5 free, then up to 15 minutes apart: one address gets about 4 guesses an hour
    by account   20 free, then up to 1 minute apart: addresses spraying one account share about
                 one guess a minute, and its admin waits at most a minute for a turn

Spraying could still take every turn the moment it comes, so the account's count is skipped
for an address the account signed in from in the last 30 days: the admin's usual address is
never slowed by anyone else's failures (its own count still applies).

The number is taken first (HINCRBY, atomic) and checked after, so attempts racing each other
cannot all see the same count and all go ahead. An attempt turned away hands its number back:
hammering does not push the schedule further out, only attempts that check a password do. A
right password hands the address's number back and clears the account's count; the address
keeps its failures, so signing in to one's own account buys no guesses at another's.
"""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import dataclass

import redis

from core import store

MEMORY = 24 * 3600
KNOWN_ADDRESS = 30 * 24 * 3600


@dataclass(frozen=True)
class Rule:
    """`free` attempts, then delays doubling from `first_delay` up to `cap` seconds."""

    free: int
    first_delay: float
    cap: float

    def earliest(self, attempt: int) -> float:
        """Seconds from the count's start to attempt number `attempt`: the delays before it."""
        waiting = max(attempt - self.free, 0)
        doubled = min(waiting, math.ceil(math.log2(self.cap / self.first_delay)))
        return self.first_delay * (2**doubled - 1) + (waiting - doubled) * self.cap


BY_ADDRESS = Rule(free=5, first_delay=1, cap=900)
BY_ACCOUNT = Rule(free=20, first_delay=1, cap=60)


@dataclass(frozen=True)
class Throttled:
    by: str  # "address" or "account"
    seconds: int  # until an attempt may be made (Retry-After)


def client(remote_addr: str | None) -> str:
    """What an address's count is kept under: the address, or an IPv6 address's /64."""
    try:
        address = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def admit(conn: redis.Redis, address: str, email: str) -> Throttled | None:
    """None when this sign-in may check its password (its numbers are taken), else why not."""
    now = time.time()
    by_address = store.admin_throttle_key("address", address)
    wait = _take(conn, by_address, BY_ADDRESS, now)
    if wait:
        return Throttled("address", wait)
    if conn.exists(store.admin_known_address_key(email, address)):
        return None
    wait = _take(conn, store.admin_throttle_key("account", email), BY_ACCOUNT, now)
    if wait:
        _give_back(conn, by_address)
        return Throttled("account", wait)
    return None


def succeeded(conn: redis.Redis, address: str, email: str) -> None:
    """The password was right: only failures count against the address, the account's count
    is its owner's to clear, and this address is now one the account signs in from."""
    _give_back(conn, store.admin_throttle_key("address", address))
    pipe = conn.pipeline()
    pipe.delete(store.admin_throttle_key("account", email))
    pipe.set(store.admin_known_address_key(email, address), 1, ex=KNOWN_ADDRESS)
    pipe.execute()


def _take(conn: redis.Redis, key: str, rule: Rule, now: float) -> int:
    """Take the count's next number: 0 when it may go ahead, else (the number handed back)
    the whole seconds to wait."""
    pipe = conn.pipeline()  # MULTI/EXEC: the number and the start it counts from, together
    pipe.hsetnx(key, "since", now)
    pipe.hincrby(key, "n", 1)
    pipe.hget(key, "since")
    pipe.expire(key, MEMORY)
    _, attempt, since, _ = pipe.execute()
    wait = float(since) + rule.earliest(attempt) - now
    if wait > 0:
        _give_back(conn, key)
        return math.ceil(wait)
    # Time left unused is not saved up: the next attempt's delay counts from this one.
    conn.hset(key, "since", now - rule.earliest(attempt))
    return 0


def _give_back(conn: redis.Redis, key: str) -> None:
    pipe = conn.pipeline()
    pipe.hincrby(key, "n", -1)
    pipe.expire(key, MEMORY)
    pipe.execute()
