"""msgraph-sdk's generated `Entity.get_field_deserializers`, without its cost.

The generated method re-executes about 2,400 `from .x import X` statements on every call (only
to type its lambdas), and kiota calls it once for every entity it reads: 45-60 ms per event on
a busy two-core machine, so one delta page of 100 events cost seconds of a worker's CPU (the
initial sync's profile, bench/initial_sync.py). The replacement returns the same two fields,
`id` and `@odata.type`, without the imports. It is installed only after checking that the
original returns exactly those fields and sets those attributes, so an SDK release that changes
Entity keeps its own method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from msgraph.generated.models.entity import Entity

_FIELDS = {"id": "id", "@odata.type": "odata_type"}  # JSON name -> attribute


class _Node:
    """A parse node that answers one string, to see what the original deserializers set."""

    def __init__(self, value: str) -> None:
        self.value = value

    def get_str_value(self) -> str:
        return self.value


def install() -> bool:
    """Replace Entity's deserializer map if the original is the one this mirrors."""
    original = Entity.get_field_deserializers
    if getattr(original, "fast", False):
        return True
    probe = Entity()
    fields = original(probe)
    if set(fields) != set(_FIELDS):
        return False
    for key, attribute in _FIELDS.items():
        fields[key](_Node(f"probe-{key}"))
        if getattr(probe, attribute, None) != f"probe-{key}":
            return False

    def get_field_deserializers(self: Entity) -> dict[str, Callable[[Any], None]]:
        return {
            key: (lambda n, attribute=attribute: setattr(self, attribute, n.get_str_value()))
            for key, attribute in _FIELDS.items()
        }

    get_field_deserializers.fast = True  # type: ignore[attr-defined]
    Entity.get_field_deserializers = get_field_deserializers  # type: ignore[method-assign]
    return True
