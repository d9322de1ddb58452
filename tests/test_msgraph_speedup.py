"""msgraph-sdk reads entities as before once its slow Entity deserializer is replaced."""

from __future__ import annotations

import json

from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
from msgraph.generated.models.event import Event

from core.microsoft import msgraph_speedup

EVENT = {
    "@odata.type": "#microsoft.graph.event",
    "id": "AAMkAGI2TG93AAA=",
    "changeKey": "DwAAABYAAAA",
    "subject": "Team meeting",
    "showAs": "busy",
    "start": {"dateTime": "2026-12-01T10:00:00.0000000", "timeZone": "UTC"},
    "singleValueExtendedProperties": [{"id": "String {6f5b} Name Mark", "value": "exsync:a:1"}],
}


def read(body: dict) -> Event:
    node = JsonParseNodeFactory().get_root_parse_node("application/json", json.dumps(body).encode())
    return node.get_object_value(Event)


def test_an_event_reads_the_same_with_the_fast_entity_fields() -> None:
    before = read(EVENT)
    assert msgraph_speedup.install() is True
    assert msgraph_speedup.install() is True, "installing twice changes nothing"
    after = read(EVENT)
    for event in (before, after):
        assert event.id == "AAMkAGI2TG93AAA=" and event.odata_type == "#microsoft.graph.event"
        assert event.change_key == "DwAAABYAAAA" and event.subject == "Team meeting"
        assert event.start.date_time.startswith("2026-12-01T10:00")
        (prop,) = event.single_value_extended_properties
        assert prop.id == "String {6f5b} Name Mark" and prop.value == "exsync:a:1"
