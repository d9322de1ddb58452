"""The records workers keep for what they wrote, read back the one way workers and receivers
share (core.sync_records): the echo check reads the very field the workers write."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from core.sync_records import Block, Projection, dump, echo_key, load

PROJECTION = Projection("appointment", "36", "u-1", "AAMk-1", "ck-ours", generation=2, digest="d")
BLOCK = Block(absence_id=7, series="", digest="d", version="ck-theirs")


@pytest.mark.parametrize("record", [PROJECTION, BLOCK, Block(0, "S-1", "")])
def test_a_record_reads_back_as_written(record: Projection | Block) -> None:
    assert load(type(record), dump(record)) == record
    assert load(type(record), dump(record).encode()) == record


def test_the_echo_key_is_the_changekey_each_record_stands_for() -> None:
    assert echo_key(Projection, dump(PROJECTION).encode()) == "ck-ours"
    assert echo_key(Block, dump(BLOCK).encode()) == "ck-theirs"
    # What a worker writes when only the changeKey moved is what the receiver then reads.
    assert echo_key(Block, dump(replace(BLOCK, version="ck-2")).encode()) == "ck-2"
    assert echo_key(Projection, dump(replace(PROJECTION, change_key="ck-3")).encode()) == "ck-3"


@pytest.mark.parametrize(
    "raw", [None, b"", b"not json", b"[1, 2]", b'{"absence_id": 1}', b'{"unknown": "field"}']
)
def test_a_missing_or_unreadable_record_has_no_echo_key(raw: bytes | None) -> None:
    assert echo_key(Block, raw) is None
    assert echo_key(Projection, raw) is None


def test_a_record_of_the_other_kind_is_not_read_as_this_one() -> None:
    assert echo_key(Block, dump(PROJECTION).encode()) is None
    assert echo_key(Projection, dump(BLOCK).encode()) is None


def test_the_stored_json_keeps_the_field_names_records_already_in_redis_use() -> None:
    # Records outlive a deployment: a rename would strand every record already written.
    assert json.loads(dump(PROJECTION)) == {
        "kind": "appointment", "item_id": "36", "mailbox": "u-1", "event_id": "AAMk-1",
        "change_key": "ck-ours", "generation": 2, "digest": "d",
    }  # fmt: skip
    assert json.loads(dump(BLOCK)) == {
        "absence_id": 7, "series": "", "digest": "d", "version": "ck-theirs"
    }  # fmt: skip
    written = '{"absence_id": 9, "series": "S-1", "digest": "d9", "version": "ck-9"}'
    assert load(Block, written) == Block(9, "S-1", "d9", "ck-9")
    assert echo_key(Block, written.encode()) == "ck-9"


def test_a_block_recorded_before_it_kept_a_version_matches_no_announced_state() -> None:
    older = b'{"absence_id": 9, "series": "", "digest": "d9"}'
    assert load(Block, older) == Block(9, "", "d9", "")
    assert not echo_key(Block, older)  # a notification always names a non-empty changeKey


@pytest.mark.parametrize("raw", [b"null", b'"ck-ours"', b"17", b"\xff\xfe", b'{"kind": 1'])
def test_json_that_holds_no_record_has_no_echo_key(raw: bytes) -> None:
    assert echo_key(Block, raw) is None
    assert echo_key(Projection, raw) is None


def test_a_record_is_pending_while_its_write_has_no_answer() -> None:
    assert Projection("appointment", "36", "u-1", "", "").pending
    assert not PROJECTION.pending
    assert Block(0, "", "").pending
    assert not BLOCK.pending
    # A changeKey is no answer to a create: only the event id is.
    assert Projection("absence", "5", "u-1", "", "ck-x").pending
