"""Proxy pieces without sockets: address forms and the flag rewriter."""

from __future__ import annotations

import pytest

from nbdscope.proxy.addresses import parse_address
from nbdscope.proxy.rewrite import FlagRewriter, parse_bits
from tests import nbdwire as w


def test_address_forms() -> None:
    assert (parse_address("127.0.0.1:10809").host, parse_address("127.0.0.1:10809").port) == ("127.0.0.1", 10809)
    assert parse_address("[::1]:20000").host == "::1"
    assert parse_address(":7000").host == "127.0.0.1"  # loopback unless told otherwise
    assert parse_address("unix:/tmp/x.sock").path == "/tmp/x.sock"
    for bad in ("nohost", "1.2.3.4:99999", "[::1]20", "unix:"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_bits_by_name_and_number() -> None:
    assert parse_bits("CAN_MULTI_CONN,10") == (1 << 8) | (1 << 10)
    assert parse_bits("NBD_FLAG_SEND_CACHE") == 1 << 10
    with pytest.raises(ValueError):
        parse_bits("NOT_A_FLAG")


def test_rewriter_patches_go_info_and_passes_the_rest() -> None:
    rw = FlagRewriter(set_mask=1 << 8, clear_mask=1 << 10)
    stream = (w.greeting_newstyle() + w.opt_reply(8, 1) + w.opt_reply(7, 3, w.info_export(4096, 0x405)) +
              w.opt_reply(7, 1) + w.simple_reply(1))
    out = b"".join(rw.feed(stream[i:i + 7]) for i in range(0, len(stream), 7))
    expected = stream.replace(w.info_export(4096, 0x405), w.info_export(4096, 0x105))
    assert out == expected and rw.changes == [(0x405, 0x105, "NBD_INFO_EXPORT in the reply to NBD_OPT_GO")]


def test_rewriter_export_name_and_oldstyle() -> None:
    rw = FlagRewriter(set_mask=1 << 8, clear_mask=0)
    reply = (4096).to_bytes(8, "big") + (0x3).to_bytes(2, "big")
    out = rw.feed(w.greeting_newstyle() + reply + b"rest")
    assert out == w.greeting_newstyle() + (4096).to_bytes(8, "big") + (0x103).to_bytes(2, "big") + b"rest"
    old = FlagRewriter(set_mask=0, clear_mask=1 << 1)
    assert old.feed(w.greeting_oldstyle(512, 0x3)) == w.greeting_oldstyle(512, 0x1)


def test_delay_specs() -> None:
    from nbdscope.proxy.rewrite import parse_delays

    assert parse_delays("READ=5,NBD_CMD_WRITE=20") == {0: 0.005, 1: 0.02}
    for bad in ("READ", "NOPE=5", "READ=fast"):
        with pytest.raises(ValueError):
            parse_delays(bad)
