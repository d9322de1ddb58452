"""Schemathesis hooks for tests/test_openapi.py (loaded through SCHEMATHESIS_HOOKS).

Coconut deliveries are signed as Coconut signs them, so the fuzzing reaches the guards behind
the signature (body, event type, the delivery id's dedupe) instead of stopping at 401 every
time. A case whose signature, timestamp or delivery id header was generated off-pattern on
purpose keeps it: those check the signature guard itself.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import schemathesis
from schemathesis.core import NotSet

from webhooks.coconut_signature import sign

SIGNATURE = re.compile(r"v2=[0-9a-f]{64}(,\s*v2=[0-9a-f]{64})*")
TIMESTAMP = re.compile(r"[0-9]{1,12}")
DELIVERY_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    headers = case.headers or {}
    if case.operation.path != "/webhooks/coconut" or case.media_type != "application/json":
        return
    if isinstance(case.body, NotSet):
        return
    offered = headers.get("X-Coconut-Signature")
    stamp = headers.get("X-Coconut-Timestamp")
    if not (isinstance(offered, str) and SIGNATURE.fullmatch(offered)):
        return
    if not (isinstance(stamp, str) and TIMESTAMP.fullmatch(stamp)):
        return
    delivery_id = headers.get("X-Coconut-Delivery-Id")
    if not (isinstance(delivery_id, str) and DELIVERY_ID.fullmatch(delivery_id)):
        return
    body = case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
    now = int(time.time())
    case.body = body  # sent as these very bytes, so the signature covers what arrives
    headers["X-Coconut-Timestamp"] = str(now)
    secret = os.environ["EXSYNC_COCONUT_WEBHOOK_SECRET"]
    headers["X-Coconut-Signature"] = sign(secret, now, delivery_id, body)
    case.headers = headers
