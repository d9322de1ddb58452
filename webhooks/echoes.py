"""Graph notifications that announce a state we already hold.

A notification names its event and the event's `@odata.etag`, W/"<changeKey>". When that
changeKey is the one we wrote (our projection of a Coconut item) or the one a busy block was
made from (a staff member's event already in Coconut), the mailbox round it asks for would read
nothing new. Without this, every event we write costs a delta round for its own echo, and every
Outlook event a second round for the `updated` notification Outlook sends after `created`.

Only a skipped round is at stake: a notification wrongly taken for news costs the round it
always did, and `deleted` notifications, or ones without an etag, are always news.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from core import store
from core.sync_records import Block, Projection, echo_key

CANDIDATE_CHANGES = {"created", "updated"}


def announced(item: dict[str, Any]) -> tuple[str, str] | None:
    """(event id, changeKey) a change notification announces, or None if it names none."""
    data = item.get("resourceData")
    if item.get("changeType") not in CANDIDATE_CHANGES or not isinstance(data, dict):
        return None
    event_id, etag = data.get("id"), data.get("@odata.etag")
    if not isinstance(event_id, str) or not isinstance(etag, str):
        return None
    if not (etag.startswith('W/"') and etag.endswith('"')) or len(etag) <= 4:
        return None
    return event_id, etag[3:-1]


def held(
    conn: redis.Redis,
    wanted: list[tuple[str, str, str]],
    also: Callable[[redis.client.Pipeline], object] | None = None,
) -> list[bool]:
    """For each (mailbox, event id, changeKey): whether we hold that very state. One round
    trip for the lot, `also` adding the caller's own commands to it."""
    pipe = conn.pipeline(transaction=False)
    if also is not None:
        also(pipe)
    skip = len(pipe)
    for mailbox, event_id, _ in wanted:
        pipe.hget(store.projected_key(mailbox), event_id)
        pipe.hget(store.block_key(mailbox), event_id)
    answers = pipe.execute()[skip:]
    return [
        key in (echo_key(Projection, answers[2 * n]), echo_key(Block, answers[2 * n + 1]))
        for n, (_, _, key) in enumerate(wanted)
    ]
