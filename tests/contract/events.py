"""Sample decoder events of every class, with optional fields left out and filled in, so the
schemas are checked against lines no shipped capture holds (unknown values, rare types)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS, OPTION_REPLIES, OPTIONS, REPLY_TYPES, Cmd, Opt, Rep, ReplyType

UNKNOWN = 0x7FFE  # a value no table defines
BASE: dict[str, Any] = {"frame": 7, "time": 0.5, "seq": 3, "start": 100, "end": 128}
C2S: dict[str, Any] = {**BASE, "dir": "c2s", "phase": "transmission"}
S2C: dict[str, Any] = {**BASE, "dir": "s2c", "phase": "transmission"}
HS_C2S: dict[str, Any] = {**C2S, "phase": "handshake"}
HS_S2C: dict[str, Any] = {**S2C, "phase": "handshake"}
MATCHED: dict[str, Any] = {"command": Cmd.READ, "request_frame": 5, "request_offset": 0, "request_length": 4096,
                           "request_flags": 1, "latency_us": 12.5}


def concrete_event_classes() -> list[type[ev.Event]]:
    """Every event class the decoder can emit (the bases Event and Reply are never emitted). Only the
    classes the module holds: a slots dataclass replaces its class, and the first one can linger
    among the subclasses until it is collected."""
    found, todo = [], [ev.Event]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls not in (ev.Event, ev.Reply) and getattr(sys.modules[cls.__module__], cls.__qualname__, None) is cls:
            found.append(cls)
    return found


def _greetings() -> Iterator[ev.Event]:
    yield ev.ServerGreeting(**HS_S2C, style="fixed-newstyle", handshake_flags=3)
    yield ev.ServerGreeting(**HS_S2C, style="newstyle", handshake_flags=0x8001)  # a reserved bit set
    yield ev.ServerGreeting(**HS_S2C, style="oldstyle", size=1 << 20, transmission_flags=0x103,
                            oldstyle_high_flags=0x10)
    yield ev.ServerGreeting(**HS_S2C, style="oldstyle", size=1 << 20, transmission_flags=1, lost=100)  # snapped


def _options() -> Iterator[ev.Event]:
    for value in [*(c.value for c in OPTIONS), UNKNOWN]:
        yield ev.OptionRequest(**HS_C2S, option=value, length=0)
    yield ev.OptionRequest(**HS_C2S, option=Opt.GO, length=12, export_name="disk", info_requests=(3, 1, 99),
                           problem="length disagrees")
    yield ev.OptionRequest(**HS_C2S, option=Opt.SET_META_CONTEXT, length=30, export_name="",
                           queries=("base:allocation", "qemu:dirty-bitmap:b0"))
    yield ev.OptionRequest(**HS_C2S, option=Opt.SET_META_CONTEXT, length=300, export_name="", queries=("base:x",),
                           lost=250)


def _option_replies() -> Iterator[ev.Event]:
    for value in [*(c.value for c in OPTION_REPLIES), UNKNOWN]:
        yield ev.OptionReply(**HS_S2C, option=Opt.GO, reply=value, length=0)
    yield ev.OptionReply(**HS_S2C, option=UNKNOWN, reply=Rep.INFO, length=12, info_type=0, size=1 << 30,
                         transmission_flags=0xFFFF)
    yield ev.OptionReply(**HS_S2C, option=Opt.INFO, reply=Rep.INFO, length=18, info_type=3, min_block=512,
                         preferred_block=4096, max_payload=1 << 25)
    yield ev.OptionReply(**HS_S2C, option=Opt.GO, reply=Rep.INFO, length=8, info_type=UNKNOWN, name="disk",
                         description="a disk", solicited=False, problem="short")
    yield ev.OptionReply(**HS_S2C, option=Opt.SET_META_CONTEXT, reply=Rep.META_CONTEXT, length=19, context_id=1,
                         name="base:allocation")
    yield ev.OptionReply(**HS_S2C, option=Opt.SET_META_CONTEXT, reply=Rep.META_CONTEXT, length=19, context_id=1,
                         name="base:a", lost=9)
    yield ev.OptionReply(**HS_S2C, option=Opt.GO, reply=Rep.ERR_UNSUP, length=5, message="no go")


def _requests() -> Iterator[ev.Event]:
    for value in [*(c.value for c in COMMANDS), UNKNOWN]:
        yield ev.Request(**C2S, cookie=1, command=value, flags=0, offset=0, length=512, extended=False,
                         payload_length=0)
    yield ev.Request(**C2S, cookie=(1 << 64) - 1, command=Cmd.BLOCK_STATUS, flags=0x2F, offset=(1 << 63),
                     length=(1 << 40), extended=True, payload_length=16, effect_length=1 << 30, context_ids=(1, 2))
    yield ev.Request(**C2S, cookie=2, command=Cmd.WRITE, flags=0x8000, offset=0, length=4096, extended=False,
                     payload_length=4096)


def _simple_replies() -> Iterator[ev.Event]:
    yield ev.SimpleReply(**S2C, cookie=1, error=0, data_length=4096, **MATCHED)
    yield ev.SimpleReply(**S2C, cookie=9, error=UNKNOWN, data_length=None, completes=True, failed=True)
    yield ev.SimpleReply(**S2C, cookie=1, error=5, data_length=0, **MATCHED, failed=True)


def _chunks() -> Iterator[ev.Event]:
    for value in [*(c.value for c in REPLY_TYPES), UNKNOWN]:
        yield ev.ReplyChunk(**S2C, cookie=1, reply_type=value, flags=1, length=0, extended=False)
    yield ev.ReplyChunk(**S2C, cookie=1, reply_type=ReplyType.OFFSET_DATA, flags=0, length=4104, extended=True,
                        header_offset=0, offset=0, data_length=4096, completes=False, **MATCHED)
    yield ev.ReplyChunk(**S2C, cookie=1, reply_type=ReplyType.OFFSET_HOLE, flags=0x8001, length=12, extended=False,
                        offset=4096, hole_length=4096, **MATCHED)
    yield ev.ReplyChunk(**S2C, cookie=3, reply_type=ReplyType.BLOCK_STATUS_EXT, flags=1, length=40, extended=True,
                        context_id=1, context="base:allocation", extents=((1 << 33, 0), (512, 3)),
                        descriptor_count=2, extents_truncated=True, command=Cmd.BLOCK_STATUS)
    yield ev.ReplyChunk(**S2C, cookie=3, reply_type=ReplyType.BLOCK_STATUS, flags=1, length=12, extended=False,
                        context_id=7, context=None, extents=((512, 1),))
    yield ev.ReplyChunk(**S2C, cookie=3, reply_type=ReplyType.BLOCK_STATUS, flags=1, length=804, extended=False,
                        context_id=1, context="base:allocation", extents=((512, 1),), extents_truncated=True, lost=788)
    yield ev.ReplyChunk(**S2C, cookie=4, reply_type=ReplyType.ERROR_OFFSET, flags=1, length=20, extended=False,
                        offset=0, error=22, message="bad", problem="message too long", failed=True, **MATCHED)


def _ends() -> Iterator[ev.Event]:
    yield ev.ConnectionEnd(**S2C, how="end-of-capture", soft=False)
    yield ev.ConnectionEnd(**S2C, how="rst", soft=False, by="c2s", in_flight=((1, Cmd.READ, 5), (2, UNKNOWN, 6)),
                           unparsed=(("c2s", 3), ("s2c", 10)))
    yield ev.ConnectionEnd(**{**S2C, "phase": "handshake"}, how="fin", soft=True, by="s2c")


# class -> (line schema, samples)
SAMPLES: dict[type[ev.Event], tuple[str, Callable[[], Iterator[ev.Event]]]] = {
    ev.ServerGreeting: ("greeting", _greetings),
    ev.ClientFlags: ("client-flags", lambda: iter([ev.ClientFlags(**HS_C2S, flags=3),
                                                   ev.ClientFlags(**HS_C2S, flags=0x80000001)])),
    ev.OptionRequest: ("option-request", _options),
    ev.OptionReply: ("option-reply", _option_replies),
    ev.ExportNameReply: ("export-name-reply", lambda: iter([
        ev.ExportNameReply(**HS_S2C, size=1 << 20, transmission_flags=0x4D, zeroes=True)])),
    ev.TransmissionStart: ("transmission-start", lambda: iter([
        ev.TransmissionStart(**S2C, how="mid-stream", export_name=None, size=None, transmission_flags=None,
                             structured_replies=None, extended_headers=None),
        ev.TransmissionStart(**S2C, how="go", export_name="", size=1 << 20, transmission_flags=0x1CD,
                             structured_replies=True, extended_headers=False, meta_contexts=((1, "base:allocation"),),
                             min_block=1, preferred_block=4096, max_payload=1 << 25)])),
    ev.TlsStart: ("tls-start", lambda: iter([ev.TlsStart(**HS_S2C)])),
    ev.TlsData: ("tls-data", lambda: iter([ev.TlsData(**HS_C2S, nbytes=517),
                                           ev.TlsData(**HS_C2S, nbytes=0, decryption="decrypted",
                                                      detail="TLS 1.3, TLS_AES_128_GCM_SHA256")])),
    ev.Request: ("request", _requests),
    ev.SimpleReply: ("simple-reply", _simple_replies),
    ev.ReplyChunk: ("reply-chunk", _chunks),
    ev.PayloadData: ("payload-data", lambda: iter([ev.PayloadData(**C2S, cookie=1, offset=0, kind="write",
                                                                  data=b"\0" * 512)])),
    ev.Gap: ("capture-gap", lambda: iter([ev.Gap(**C2S, nbytes=1448, resync=True)])),
    ev.Resync: ("resync", lambda: iter([ev.Resync(**S2C, skipped=12, after_gap=True)])),
    ev.Malformed: ("malformed", lambda: iter([
        ev.Malformed(**S2C, what="bad-magic", message="expected a reply magic", values=(("magic", 1), ("x", None))),
        ev.Malformed(**HS_C2S, what="option-after-handshake", message="m")])),
    ev.ConnectionEnd: ("connection-end", _ends),
}


def samples(cls: type[ev.Event]) -> Iterator[ev.Event]:
    return SAMPLES[cls][1]()
