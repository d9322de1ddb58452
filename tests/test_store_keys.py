"""Every Redis key is built in core/store.py: the shapes are the layout the README promises,
and no two kinds of key can collide."""

from __future__ import annotations

import re

from core import store

KEYS = {name: key for name, key in vars(store).items() if isinstance(key, store.Key)}


def test_keys_fill_their_ids_in_order_and_scan_with_a_star() -> None:
    assert store.dirty_key("mailbox", "u-1") == "exsync:dirty:mailbox:u-1"
    assert store.mailbox_override_key(7) == "exsync:staff:7:mailbox_override"
    assert store.graph_gate_key("slots", "app", "u-1") == "exsync:graph:slots:app:u-1"
    assert store.block_key("*") == "exsync:block:*"
    assert store.projection_key("absence", "") == "exsync:projection:absence:"
    assert store.connection_key() == "exsync:connection"
    assert store.mailbox_key("{0}") == "exsync:mailbox:{0}", "an id is never a template"


def test_every_key_is_named_for_what_it_holds_and_has_its_own_shape() -> None:
    assert len(KEYS) > 30
    assert all(name.endswith("_key") for name in KEYS)
    shapes = [re.sub(r"\{\}", "*", key.template) for key in KEYS.values()]
    assert len(set(shapes)) == len(shapes)


def test_no_key_of_one_shape_falls_under_another_s_scan() -> None:
    """A scan for one kind of key (its ids all "*") never returns another kind's keys."""
    for name, key in KEYS.items():
        ids = key.template.count("{}")
        sample = key(*(f"id{n}" for n in range(ids)))
        for other_name, other in KEYS.items():
            if other is key or not other.template.count("{}"):
                continue
            pattern = re.escape(other.template).replace(r"\{\}", "[^:]+")
            assert not re.fullmatch(pattern, sample), f"{name} matches {other_name}'s scan"
