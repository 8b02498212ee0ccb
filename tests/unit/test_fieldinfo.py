"""The presentation registry covers every decoder event field, and decodes each with the
spec's own tables (by reference, never a copy of their bits or codes)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.report.fieldinfo import FIELDS, NOT_SHOWN, FieldInfo, bit_rows, type_name
from nbdscope.report.sessionpanel import session_panel
from nbdscope.spec import codes as spec_codes
from nbdscope.spec import flags as spec_flags
from nbdscope.spec.tables import CodeTable, FlagField
from nbdscope.vocab import Endpoint

EVENT_CLASSES = [c for _, c in inspect.getmembers(ev, inspect.isclass)
                 if c.__module__ == ev.__name__ and dataclasses.is_dataclass(c) and issubclass(c, ev.Event)]
SPEC_FLAG_TABLES = [v for v in vars(spec_flags).values() if isinstance(v, FlagField)]
SPEC_CODE_TABLES = [v for v in vars(spec_codes).values() if isinstance(v, CodeTable)]
# which enum of spec/flags.py holds each table's bits, typed here rather than looked up
ENUM_OF = {"handshake flags": spec_flags.HandshakeFlag, "client flags": spec_flags.ClientFlag,
           "transmission flags": spec_flags.TransmissionFlag, "command flags": spec_flags.CommandFlag,
           "reply flags": spec_flags.ReplyFlag}


def _infos() -> list[tuple[type, str, FieldInfo]]:
    return [(cls, name, info) for cls in EVENT_CLASSES for name, info in FIELDS.get(cls, {}).items()]


def test_the_module_has_event_classes() -> None:
    assert {ev.Request, ev.ReplyChunk, ev.ServerGreeting, ev.ConnectionEnd} <= set(EVENT_CLASSES)


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.__name__)
def test_every_field_has_metadata_or_is_listed_as_not_shown(cls: type) -> None:
    declared = {f.name for f in dataclasses.fields(cls)}
    known = FIELDS.get(cls)
    assert known is not None, f"{cls.__name__} has no entry in fieldinfo.FIELDS"
    missing = declared - set(known) - set(NOT_SHOWN)
    assert not missing, f"{cls.__name__}: no metadata and not listed as not shown: {sorted(missing)}"
    both = set(known) & set(NOT_SHOWN)
    assert not both, f"{cls.__name__}: both described and listed as not shown: {sorted(both)}"
    stale = set(known) - declared
    assert not stale, f"{cls.__name__}: metadata for fields it does not have: {sorted(stale)}"


def test_every_entry_says_what_it_is() -> None:
    for cls, name, info in _infos():
        assert info.label and info.meaning.strip(), f"{cls.__name__}.{name}"
        assert "\n" not in info.meaning, f"{cls.__name__}.{name}: one line"


def test_flag_valued_fields_are_decoded_by_a_table_of_spec_flags() -> None:
    seen = 0
    for cls, name, info in _infos():
        if name.endswith("flags") and info.kind != "reserved":
            assert info.kind == "flags", f"{cls.__name__}.{name} looks like flags but is {info.kind}"
        if info.kind == "flags":
            seen += 1
            assert any(info.flags is t for t in SPEC_FLAG_TABLES), \
                f"{cls.__name__}.{name}: its table is not one defined in nbdscope/spec/flags.py"
        else:
            assert info.flags is None, f"{cls.__name__}.{name}: a table on a field of kind {info.kind}"
    assert seen >= 9  # transmission flags of four messages, handshake, client, command, reply, request flags
    # reserved bits have no table: only the oldstyle upper half is of that kind
    reserved = {(cls, name) for cls, name, info in _infos() if info.kind == "reserved"}
    assert reserved == {(ev.ServerGreeting, "oldstyle_high_flags")}


def test_flag_tables_agree_bit_for_bit_with_the_spec_enums() -> None:
    for table in SPEC_FLAG_TABLES:
        enum = ENUM_OF[table.field]
        assert len(table.bits) == len(enum), table.field
        for bit in table.bits:
            member = enum[bit.name.split("FLAG_", 1)[1]]
            assert int(member) == bit.mask, f"{bit.name}: table says bit {bit.number}, enum says {int(member):#x}"


def test_specific_fields_use_the_table_the_spec_names() -> None:
    # the same field name means different flags in different messages
    assert FIELDS[ev.Request]["flags"].flags is spec_flags.COMMAND_FLAGS
    assert FIELDS[ev.ReplyChunk]["flags"].flags is spec_flags.REPLY_FLAGS
    assert FIELDS[ev.ClientFlags]["flags"].flags is spec_flags.CLIENT_FLAGS
    assert FIELDS[ev.SimpleReply]["request_flags"].flags is spec_flags.COMMAND_FLAGS
    for cls in (ev.ServerGreeting, ev.OptionReply, ev.ExportNameReply, ev.TransmissionStart):
        assert FIELDS[cls]["transmission_flags"].flags is spec_flags.TRANSMISSION_FLAGS


def test_enumerated_fields_are_named_by_a_table_of_spec_codes() -> None:
    for cls, name, info in _infos():
        if info.kind in ("code", "codes", "in-flight"):
            assert any(info.codes is t for t in SPEC_CODE_TABLES), \
                f"{cls.__name__}.{name}: its table is not one defined in nbdscope/spec/codes.py"
        else:
            assert info.codes is None, f"{cls.__name__}.{name}"
        if info.json != "value":  # the JSONL record decodes it: there must be something to decode with
            assert info.flags is not None or info.codes is not None, f"{cls.__name__}.{name}"


def _base(**kw: object) -> dict[str, object]:
    return {"dir": "c2s", "frame": 1, "time": 0.0, "phase": "transmission", "seq": 0, "start": 0, "end": 0, **kw}


def test_type_names_are_the_spec_names() -> None:
    # numbers typed from doc/proto.md: NBD_CMD_READ 0, NBD_OPT_GO 7, NBD_REP_ACK 1, NBD_REPLY_TYPE_OFFSET_DATA 1
    req = ev.Request(**_base(), cookie=1, command=0, flags=0, offset=0, length=512, extended=False,
                     payload_length=0)
    assert type_name(req) == "NBD_CMD_READ"
    chunk = ev.ReplyChunk(**_base(dir="s2c"), cookie=1, reply_type=1, flags=1, length=8, extended=False)
    assert type_name(chunk) == "NBD_REPLY_TYPE_OFFSET_DATA"
    assert type_name(ev.OptionRequest(**_base(phase="handshake"), option=7, length=0)) == "NBD_OPT_GO"
    assert type_name(ev.OptionReply(**_base(phase="handshake"), option=7, reply=1, length=0)) == "NBD_REP_ACK"
    assert type_name(ev.SimpleReply(**_base(), cookie=1, error=0, data_length=None)) == "NBD_SIMPLE_REPLY"
    assert type_name(ev.ServerGreeting(**_base(), style="oldstyle")) == "OLDSTYLE_GREETING"
    assert type_name(ev.ServerGreeting(**_base(), style="fixed-newstyle")) == "NEWSTYLE_GREETING"
    assert type_name(ev.Request(**_base(), cookie=1, command=250, flags=0, offset=0, length=0, extended=False,
                                payload_length=0)) == "NBD_CMD_UNKNOWN(250)"


def test_bit_rows_list_defined_bits_and_set_reserved_ones() -> None:
    table = spec_flags.COMMAND_FLAGS
    rows = bit_rows(table, (1 << 0) | (1 << 9))  # FUA, and bit 9 which no command flag uses
    assert [r.number for r in rows] == [b.number for b in table.bits] + [9]
    assert rows[0].set and rows[0].bit is not None and rows[0].bit.name == "NBD_CMD_FLAG_FUA"
    assert not any(r.set for r in rows[1:-1])
    assert rows[-1].bit is None and rows[-1].set


def test_session_panel_follows_the_session() -> None:
    s = Session(id="s9", client=Endpoint("10.0.0.1", 4000), server=Endpoint("10.0.0.2", 10809), source="x.pcap",
                first_frame=3, saw_start=False, handshake="fixed-newstyle", transmission_flags=0x8001,
                meta_contexts={2: "base:allocation"})
    report = dict(session_panel(s, "report").rows)
    screen = dict(session_panel(s, "screen", anomalies=4).rows)
    assert report["handshake"].endswith("(capture began mid-connection)")
    assert report["meta contexts"] == "2 = base:allocation" and screen["metadata contexts"] == "2=base:allocation"
    assert screen["anomalies"] == "4" and "anomalies" not in report
    assert report["block sizes"].startswith("not advertised") and screen["block sizes"] == "not announced"
    panel = session_panel(s, "report")
    assert panel.flags is spec_flags.TRANSMISSION_FLAGS and panel.flags_value == 0x8001
    assert [r.number for r in panel.bits if r.set] == [0, 15] and panel.bits[-1].bit is None
    bare = dataclasses.replace(s, meta_contexts={}, transmission_flags=None)
    assert "meta contexts" not in dict(session_panel(bare, "report").rows)
    assert session_panel(bare, "screen").bits == []
