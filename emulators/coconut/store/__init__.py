"""The emulator's whole state, in memory, behind one lock, in per-concern parts.

Every write goes through a method here, which validates strictly, bumps `version` and
`updated_at`, and queues webhook deliveries for the sender threads (deliveries.py). Nothing here
sends HTTP: a request that changes something only queues, exactly as a real SaaS does.

- records.py: the tables, `Settings`, ids, versions and If-Match, shared by every part
- checks.py: strict attribute checks (unknown, read-only, wrong type → 422)
- access.py: tokens (OAuth2 client credentials), the rate limit and the request counters
- webhooks.py: subscriptions and the delivery queue (with the delivery faults)
- users.py, appointments.py, absences.py: those collections' writes and the events they send
- emulators/coconut/faults.py: the armed faults (`store.faults`)

Turning a record into JSON:API is emulators/coconut/render.py's job, not the store's.
"""

from __future__ import annotations

from emulators.coconut.render import delivery_json
from emulators.coconut.store.absences import AbsenceRecords
from emulators.coconut.store.access import SCOPES, Counters, RateLimit, Token, Tokens
from emulators.coconut.store.appointments import APPOINTMENT_STATUSES, AppointmentRecords
from emulators.coconut.store.records import Settings
from emulators.coconut.store.users import UserRecords
from emulators.coconut.store.webhooks import EVENTS

__all__ = [
    "APPOINTMENT_STATUSES",
    "EVENTS",
    "SCOPES",
    "Counters",
    "Settings",
    "Store",
    "Token",
    "delivery_json",
]


class Store(UserRecords, AppointmentRecords, AbsenceRecords):
    """All collections, tokens, rate windows, faults and the delivery log; guarded by `lock`."""

    def __init__(self, client_id: str, client_secret: str, tenant: str, settings: Settings) -> None:
        super().__init__(tenant, settings)
        self.tokens = Tokens(self.lock, client_id, client_secret, settings)
        self.rate = RateLimit(self.lock, settings)
        self.requests = Counters()
