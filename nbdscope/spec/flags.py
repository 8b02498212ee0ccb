"""Every flags field of the NBD protocol, bit by bit.

Bit numbers and names are the spec's; the meanings are our own summaries. The
section strings name the spec section (doc/proto.md of NetworkBlockDevice/nbd,
and its extension-ext-header / extension-resize branches) each bit comes from.
"""

from __future__ import annotations

from enum import IntFlag

from nbdscope.spec.tables import Bit, FlagField

_HS = "Handshake flags"
_CF = "Client flags"
_TF = "Transmission flags"
_CMDF = "Command flags"
_RF = "Structured reply flags"


class HandshakeFlag(IntFlag):
    FIXED_NEWSTYLE = 1 << 0
    NO_ZEROES = 1 << 1


class ClientFlag(IntFlag):
    C_FIXED_NEWSTYLE = 1 << 0
    C_NO_ZEROES = 1 << 1


class TransmissionFlag(IntFlag):
    HAS_FLAGS = 1 << 0
    READ_ONLY = 1 << 1
    SEND_FLUSH = 1 << 2
    SEND_FUA = 1 << 3
    ROTATIONAL = 1 << 4
    SEND_TRIM = 1 << 5
    SEND_WRITE_ZEROES = 1 << 6
    SEND_DF = 1 << 7
    CAN_MULTI_CONN = 1 << 8
    SEND_RESIZE = 1 << 9
    SEND_CACHE = 1 << 10
    SEND_FAST_ZERO = 1 << 11
    BLOCK_STATUS_PAYLOAD = 1 << 12


class CommandFlag(IntFlag):
    FUA = 1 << 0
    NO_HOLE = 1 << 1
    DF = 1 << 2
    REQ_ONE = 1 << 3
    FAST_ZERO = 1 << 4
    PAYLOAD_LEN = 1 << 5


class ReplyFlag(IntFlag):
    DONE = 1 << 0


HANDSHAKE_FLAGS = FlagField("handshake flags", 16, (
    Bit(0, "NBD_FLAG_FIXED_NEWSTYLE", "server speaks the fixed newstyle protocol", _HS),
    Bit(1, "NBD_FLAG_NO_ZEROES", "server can skip the 124 zero bytes after NBD_OPT_EXPORT_NAME", _HS),
))

CLIENT_FLAGS = FlagField("client flags", 32, (
    Bit(0, "NBD_FLAG_C_FIXED_NEWSTYLE", "client speaks the fixed newstyle protocol", _CF),
    Bit(1, "NBD_FLAG_C_NO_ZEROES", "client asks the server to skip the 124 zero bytes", _CF),
))

TRANSMISSION_FLAGS = FlagField("transmission flags", 16, (
    Bit(0, "NBD_FLAG_HAS_FLAGS", "the flags field is meaningful; always set", _TF),
    Bit(1, "NBD_FLAG_READ_ONLY", "export is read-only; writes must fail", _TF),
    Bit(2, "NBD_FLAG_SEND_FLUSH", "server accepts NBD_CMD_FLUSH", _TF),
    Bit(3, "NBD_FLAG_SEND_FUA", "server honours NBD_CMD_FLAG_FUA", _TF),
    Bit(4, "NBD_FLAG_ROTATIONAL", "export behaves like rotating media; clients may reorder I/O", _TF),
    Bit(5, "NBD_FLAG_SEND_TRIM", "server accepts NBD_CMD_TRIM", _TF),
    Bit(6, "NBD_FLAG_SEND_WRITE_ZEROES", "server accepts NBD_CMD_WRITE_ZEROES and NBD_CMD_FLAG_NO_HOLE", _TF),
    Bit(7, "NBD_FLAG_SEND_DF", "server honours NBD_CMD_FLAG_DF on reads (structured replies only)", _TF),
    Bit(8, "NBD_FLAG_CAN_MULTI_CONN", "cache is shared by all connections: flush and FUA are visible everywhere, so several connections are safe", _TF),
    Bit(9, "NBD_FLAG_SEND_RESIZE", "server accepts NBD_CMD_RESIZE (experimental RESIZE extension)", "Transmission flags; RESIZE extension"),
    Bit(10, "NBD_FLAG_SEND_CACHE", "server understands NBD_CMD_CACHE (prefetch)", _TF),
    Bit(11, "NBD_FLAG_SEND_FAST_ZERO", "server honours NBD_CMD_FLAG_FAST_ZERO on WRITE_ZEROES", _TF),
    Bit(12, "NBD_FLAG_BLOCK_STATUS_PAYLOAD", "BLOCK_STATUS may carry a payload selecting contexts (extended headers only)", "Transmission flags; EXTENDED_HEADERS extension"),
))

COMMAND_FLAGS = FlagField("command flags", 16, (
    Bit(0, "NBD_CMD_FLAG_FUA", "force unit access: persist before replying", _CMDF),
    Bit(1, "NBD_CMD_FLAG_NO_HOLE", "write zeroes without punching a hole", _CMDF),
    Bit(2, "NBD_CMD_FLAG_DF", "do not fragment the read reply into several chunks", _CMDF),
    Bit(3, "NBD_CMD_FLAG_REQ_ONE", "return one extent per context in BLOCK_STATUS", _CMDF),
    Bit(4, "NBD_CMD_FLAG_FAST_ZERO", "fail WRITE_ZEROES quickly unless it is faster than writing", _CMDF),
    Bit(5, "NBD_CMD_FLAG_PAYLOAD_LEN", "length field is a payload length (extended headers only)", "Command flags; EXTENDED_HEADERS extension"),
))

REPLY_FLAGS = FlagField("reply flags", 16, (
    Bit(0, "NBD_REPLY_FLAG_DONE", "last chunk of this reply", _RF),
))

FLAG_FIELDS: dict[str, FlagField] = {
    "handshake_flags": HANDSHAKE_FLAGS,
    "client_flags": CLIENT_FLAGS,
    "transmission_flags": TRANSMISSION_FLAGS,
    "command_flags": COMMAND_FLAGS,
    "reply_flags": REPLY_FLAGS,
}
