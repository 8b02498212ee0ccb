"""The spec tables checked against the spec's own numbers, typed here from
doc/proto.md (and its extension-ext-header / extension-resize branches)
independently of nbdscope/spec."""

from __future__ import annotations

import pytest

from nbdscope import spec
from nbdscope.spec import magics

TRANSMISSION = {
    0: "NBD_FLAG_HAS_FLAGS", 1: "NBD_FLAG_READ_ONLY", 2: "NBD_FLAG_SEND_FLUSH", 3: "NBD_FLAG_SEND_FUA",
    4: "NBD_FLAG_ROTATIONAL", 5: "NBD_FLAG_SEND_TRIM", 6: "NBD_FLAG_SEND_WRITE_ZEROES", 7: "NBD_FLAG_SEND_DF",
    8: "NBD_FLAG_CAN_MULTI_CONN", 9: "NBD_FLAG_SEND_RESIZE", 10: "NBD_FLAG_SEND_CACHE",
    11: "NBD_FLAG_SEND_FAST_ZERO", 12: "NBD_FLAG_BLOCK_STATUS_PAYLOAD",
}
COMMAND_FLAGS = {0: "NBD_CMD_FLAG_FUA", 1: "NBD_CMD_FLAG_NO_HOLE", 2: "NBD_CMD_FLAG_DF", 3: "NBD_CMD_FLAG_REQ_ONE",
                 4: "NBD_CMD_FLAG_FAST_ZERO", 5: "NBD_CMD_FLAG_PAYLOAD_LEN"}
OPTIONS = {1: "EXPORT_NAME", 2: "ABORT", 3: "LIST", 4: "PEEK_EXPORT", 5: "STARTTLS", 6: "INFO", 7: "GO",
           8: "STRUCTURED_REPLY", 9: "LIST_META_CONTEXT", 10: "SET_META_CONTEXT", 11: "EXTENDED_HEADERS"}
REPLIES = {1: "ACK", 2: "SERVER", 3: "INFO", 4: "META_CONTEXT", 2**31 + 1: "ERR_UNSUP", 2**31 + 2: "ERR_POLICY",
           2**31 + 3: "ERR_INVALID", 2**31 + 4: "ERR_PLATFORM", 2**31 + 5: "ERR_TLS_REQD", 2**31 + 6: "ERR_UNKNOWN",
           2**31 + 7: "ERR_SHUTDOWN", 2**31 + 8: "ERR_BLOCK_SIZE_REQD", 2**31 + 9: "ERR_TOO_BIG",
           2**31 + 10: "ERR_EXT_HEADER_REQD"}
COMMANDS = {0: "READ", 1: "WRITE", 2: "DISC", 3: "FLUSH", 4: "TRIM", 5: "CACHE", 6: "WRITE_ZEROES",
            7: "BLOCK_STATUS", 8: "RESIZE"}
REPLY_TYPES = {0: "NONE", 1: "OFFSET_DATA", 2: "OFFSET_HOLE", 5: "BLOCK_STATUS", 6: "BLOCK_STATUS_EXT",
               2**15 + 1: "ERROR", 2**15 + 2: "ERROR_OFFSET"}
ERRORS = {0: "SUCCESS", 1: "EPERM", 5: "EIO", 12: "ENOMEM", 22: "EINVAL", 28: "ENOSPC", 75: "EOVERFLOW",
          95: "ENOTSUP", 108: "ESHUTDOWN"}
INFOS = {0: "EXPORT", 1: "NAME", 2: "DESCRIPTION", 3: "BLOCK_SIZE"}


def test_seed_bits() -> None:
    assert spec.TRANSMISSION_FLAGS.bit(8).name == "NBD_FLAG_CAN_MULTI_CONN"
    assert spec.TRANSMISSION_FLAGS.bit(10).name == "NBD_FLAG_SEND_CACHE"
    assert spec.TransmissionFlag.CAN_MULTI_CONN == 1 << 8
    assert spec.TransmissionFlag.SEND_CACHE == 1 << 10


@pytest.mark.parametrize(("field", "expected"), [
    (spec.TRANSMISSION_FLAGS, TRANSMISSION), (spec.COMMAND_FLAGS, COMMAND_FLAGS),
    (spec.HANDSHAKE_FLAGS, {0: "NBD_FLAG_FIXED_NEWSTYLE", 1: "NBD_FLAG_NO_ZEROES"}),
    (spec.CLIENT_FLAGS, {0: "NBD_FLAG_C_FIXED_NEWSTYLE", 1: "NBD_FLAG_C_NO_ZEROES"}),
    (spec.REPLY_FLAGS, {0: "NBD_REPLY_FLAG_DONE"}),
])
def test_flag_fields(field: spec.tables.FlagField, expected: dict[int, str]) -> None:
    assert {b.number: b.name for b in field.bits} == expected
    for b in field.bits:
        assert b.meaning and b.section, b.name


@pytest.mark.parametrize(("table", "prefix", "expected"), [
    (spec.OPTIONS, "NBD_OPT_", OPTIONS), (spec.OPTION_REPLIES, "NBD_REP_", REPLIES),
    (spec.COMMANDS, "NBD_CMD_", COMMANDS), (spec.REPLY_TYPES, "NBD_REPLY_TYPE_", REPLY_TYPES),
    (spec.ERRORS, "NBD_", ERRORS), (spec.INFO_TYPES, "NBD_INFO_", INFOS),
])
def test_code_tables(table: spec.tables.CodeTable, prefix: str, expected: dict[int, str]) -> None:
    assert {c.value: c.name for c in table} == {v: prefix + n for v, n in expected.items()}
    for c in table:
        assert c.meaning and c.section, c.name


def test_magics() -> None:
    assert magics.NBDMAGIC_BYTES == b"NBDMAGIC"
    assert magics.IHAVEOPT_BYTES == b"IHAVEOPT"
    assert (magics.CLISERV_MAGIC, magics.OPTION_REPLY_MAGIC) == (0x00420281861253, 0x3E889045565A9)
    assert (magics.REQUEST_MAGIC, magics.EXTENDED_REQUEST_MAGIC) == (0x25609513, 0x21E41C71)
    assert (magics.SIMPLE_REPLY_MAGIC, magics.STRUCTURED_REPLY_MAGIC, magics.EXTENDED_REPLY_MAGIC) == (
        0x67446698, 0x668E33EF, 0x6E8A278C)


def test_flag_rendering_names_unknown_bits() -> None:
    described = spec.TRANSMISSION_FLAGS.describe((1 << 8) | (1 << 14) | 1)
    assert described["value"] == 0x4101
    bits = {b["bit"]: b for b in described["bits"]}  # type: ignore[index]
    assert len(bits) == 14 and bits[8]["set"] and not bits[10]["set"]
    assert bits[14] == {"bit": 14, "name": None, "set": True, "reserved": True}
    assert spec.TRANSMISSION_FLAGS.names(0x4101) == ["NBD_FLAG_HAS_FLAGS", "NBD_FLAG_CAN_MULTI_CONN", "bit 14"]
    assert spec.TRANSMISSION_FLAGS.by_name("CAN_MULTI_CONN").number == 8
    assert spec.TRANSMISSION_FLAGS.by_name("NBD_FLAG_SEND_CACHE").number == 10
