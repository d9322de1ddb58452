"""Which notifications name a state at all (webhooks.echoes.announced): only a `created` or
`updated` with an event id and a weak etag; anything else is news, whatever we hold."""

from __future__ import annotations

import pytest

from webhooks.echoes import announced

DATA = {"id": "AAMk=", "@odata.etag": 'W/"DwAAABYAAAA"'}


def test_a_change_notification_names_its_event_and_change_key() -> None:
    for change in ("created", "updated"):
        assert announced({"changeType": change, "resourceData": DATA}) == ("AAMk=", "DwAAABYAAAA")


@pytest.mark.parametrize(
    "item",
    [
        {"changeType": "deleted", "resourceData": DATA},
        {"changeType": "updated"},
        {"changeType": "updated", "resourceData": "AAMk="},
        {"changeType": "updated", "resourceData": {"id": "AAMk="}},
        {"changeType": "updated", "resourceData": {**DATA, "@odata.etag": "DwAAABYAAAA"}},
        {"changeType": "updated", "resourceData": {**DATA, "@odata.etag": 'W/""'}},
        {"changeType": "updated", "resourceData": {**DATA, "id": 7}},
    ],
)
def test_anything_else_names_no_state(item: dict) -> None:
    assert announced(item) is None
