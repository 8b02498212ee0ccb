"""Firing and silence tests of option-protocol, one violation per script, each naming the requirement
rows (nbdscope/spec/requirements/handshake.toml) it shows broken or honoured.

Numbers are typed from the spec here (as in tests/nbdwire.py), not imported from nbdscope.spec."""

from __future__ import annotations

import struct

from nbdscope.analysis.engine import Result
from tests import nbdwire as w
from tests.judging import analyze, fired, silent

EXPORT_NAME, ABORT, LIST, STARTTLS, INFO, GO, SR, LIST_META, SET_META, EXT = 1, 2, 3, 5, 6, 7, 8, 9, 10, 11
ACK, SERVER, REP_INFO, META = 1, 2, 3, 4
ERR = 1 << 31
ERR_UNSUP, ERR_INVALID, ERR_UNKNOWN, ERR_SHUTDOWN, ERR_BLOCK_SIZE_REQD, ERR_TOO_BIG = (
    ERR + 1, ERR + 3, ERR + 6, ERR + 7, ERR + 8, ERR + 9)
INFO_EXPORT, INFO_NAME, INFO_BLOCK_SIZE = 0, 1, 3
TF = 0x1 | 0x4  # HAS_FLAGS | SEND_FLUSH
READ = 0

Script = list[tuple[str, bytes]]
GREET: Script = [("s2c", w.greeting_newstyle()), ("c2s", w.client_flags())]
SR_AGREED: Script = [("c2s", w.option(SR)), ("s2c", w.opt_reply(SR, ACK))]


def go(name: str = "", infos: tuple[int, ...] = ()) -> Script:
    return [("c2s", w.option(GO, w.opt_go_data(name, infos))),
            ("s2c", w.opt_reply(GO, REP_INFO, w.info_export(1 << 20, TF))), ("s2c", w.opt_reply(GO, ACK))]


def checks(result: Result) -> set[str]:
    return {a.check or a.rule for a in result.anomalies}


def only(script: Script, check: str, blame: str) -> list:
    """The script breaks exactly one statement: ``check`` fires, blaming ``blame``, and nothing else does."""
    result = analyze(script)
    hits = fired(result, check, blame=blame)
    assert checks(result) == {f"option-protocol.{check.split('.', 1)[1]}"}, [(a.check, a.message)
                                                                            for a in result.anomalies]
    return hits


# ------------------------------------------------------------ greeting and flags

def test_oldstyle_greeting_on_the_newstyle_port() -> None:
    """newstyle.3: oldstyle on 10809 is advised against (a warning); newstyle.may.1 lets servers use other ports."""
    hits = fired(analyze([("s2c", w.greeting_oldstyle(1 << 20, TF))]), "option-protocol.oldstyle-on-newstyle-port",
                 blame="server")
    assert hits[0].severity == "warning" and "10809" in hits[0].message


def test_a_server_that_keeps_going_after_undefined_client_flags() -> None:
    """newstyle.6 / cflags.5: the server must drop a client that set undefined bits (the bits themselves are
    reserved-bits-set's)."""
    kept = analyze([("s2c", w.greeting_newstyle()), ("c2s", w.client_flags(0b111)), *go()])
    assert len(fired(kept, "option-protocol.kept-bad-client-flags", blame="server")) == 1
    assert checks(kept) == {"option-protocol.kept-bad-client-flags", "reserved-bits-set"}
    dropped = analyze([("s2c", w.greeting_newstyle()), ("c2s", w.client_flags(0b111)),
                       ("c2s", w.option(GO, w.opt_go_data("")))])
    silent(dropped, "option-protocol")


def test_no_zeroes_asked_but_not_offered() -> None:
    """cflags.2: C_NO_ZEROES only when the server offered NO_ZEROES."""
    only([("s2c", w.greeting_newstyle(0b01)), ("c2s", w.client_flags(0b11))],
         "option-protocol.no-zeroes-not-offered", "client")


def test_client_without_fixed_newstyle_flag_and_a_server_that_honours_it() -> None:
    """fixed-newstyle.1 / cflags.1 (a warning); cflags.may.1: the server may treat it as fixed anyway."""
    result = analyze([("s2c", w.greeting_newstyle()), ("c2s", w.client_flags(0)), *go()])
    [hit] = fired(result, "option-protocol.no-fixed-newstyle-flag", blame="client")
    assert hit.severity == "warning"
    silent(result, "option-protocol.kept-bad-client-flags", "option-protocol.replies-without-fixed-newstyle")
    assert checks(result) == {"option-protocol.no-fixed-newstyle-flag"}


def test_option_replies_without_fixed_newstyle() -> None:
    """opt-export-name.2: a server answering options must offer fixed newstyle."""
    script = [("s2c", w.greeting_newstyle(0b10)), ("c2s", w.client_flags(0b10)), *go()]
    only(script, "option-protocol.replies-without-fixed-newstyle", "server")


def _export_name(hflags: int, cflags: int, reply: bytes) -> Script:
    return [("s2c", w.greeting_newstyle(hflags)), ("c2s", w.client_flags(cflags)),
            ("c2s", w.option(EXPORT_NAME, b"disk")), ("s2c", reply),
            ("c2s", w.request(READ, 1, 0, 512)), ("s2c", w.simple_reply(1, 0, bytes(512)))]


def test_zero_padding_despite_no_zeroes() -> None:
    """hflags.2 / cflags.3: with both NO_ZEROES flags the 124 zeroes are left out; the stream stays framed."""
    size_flags = struct.pack(">QH", 1 << 20, TF)
    only(_export_name(0b11, 0b11, size_flags + bytes(124)), "option-protocol.zeroes-despite-no-zeroes", "server")
    silent(analyze(_export_name(0b11, 0b11, size_flags)), "option-protocol", "malformed-message")


def test_zero_padding_missing() -> None:
    """hflags.4: without C_NO_ZEROES the server keeps the padding (a SHOULD NOT: a warning)."""
    size_flags = struct.pack(">QH", 1 << 20, TF)
    [hit] = only(_export_name(0b01, 0b01, size_flags), "option-protocol.zeroes-missing", "server")
    assert hit.severity == "warning"
    silent(analyze(_export_name(0b01, 0b01, size_flags + bytes(124))), "option-protocol", "malformed-message")
