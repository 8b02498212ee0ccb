"""Enumerated values of the NBD protocol: options, option replies, info types,
commands, structured reply types and error values.

Numbers and names are the spec's; meanings are our own one-line summaries.
"""

from __future__ import annotations

from enum import IntEnum

from nbdscope.spec.tables import CodeTable

_OPT = "Option types"
_REP = "Option reply types"
_INFO = "Option reply types; NBD_REP_INFO"
_CMD = "Request types"
_RT = "Structured reply types"
_ERR = "Error values"
_EXT = "EXTENDED_HEADERS extension"
_RESIZE = "RESIZE extension"

REP_ERR_BIT = 1 << 31
REPLY_TYPE_ERR_BIT = 1 << 15


class Opt(IntEnum):
    EXPORT_NAME = 1
    ABORT = 2
    LIST = 3
    PEEK_EXPORT = 4
    STARTTLS = 5
    INFO = 6
    GO = 7
    STRUCTURED_REPLY = 8
    LIST_META_CONTEXT = 9
    SET_META_CONTEXT = 10
    EXTENDED_HEADERS = 11


class Rep(IntEnum):
    ACK = 1
    SERVER = 2
    INFO = 3
    META_CONTEXT = 4
    ERR_UNSUP = REP_ERR_BIT | 1
    ERR_POLICY = REP_ERR_BIT | 2
    ERR_INVALID = REP_ERR_BIT | 3
    ERR_PLATFORM = REP_ERR_BIT | 4
    ERR_TLS_REQD = REP_ERR_BIT | 5
    ERR_UNKNOWN = REP_ERR_BIT | 6
    ERR_SHUTDOWN = REP_ERR_BIT | 7
    ERR_BLOCK_SIZE_REQD = REP_ERR_BIT | 8
    ERR_TOO_BIG = REP_ERR_BIT | 9
    ERR_EXT_HEADER_REQD = REP_ERR_BIT | 10


class Info(IntEnum):
    EXPORT = 0
    NAME = 1
    DESCRIPTION = 2
    BLOCK_SIZE = 3


class Cmd(IntEnum):
    READ = 0
    WRITE = 1
    DISC = 2
    FLUSH = 3
    TRIM = 4
    CACHE = 5
    WRITE_ZEROES = 6
    BLOCK_STATUS = 7
    RESIZE = 8


class ReplyType(IntEnum):
    NONE = 0
    OFFSET_DATA = 1
    OFFSET_HOLE = 2
    BLOCK_STATUS = 5
    BLOCK_STATUS_EXT = 6
    ERROR = REPLY_TYPE_ERR_BIT | 1
    ERROR_OFFSET = REPLY_TYPE_ERR_BIT | 2


class Errno(IntEnum):
    SUCCESS = 0
    EPERM = 1
    EIO = 5
    ENOMEM = 12
    EINVAL = 22
    ENOSPC = 28
    EOVERFLOW = 75
    ENOTSUP = 95
    ESHUTDOWN = 108


OPTIONS = CodeTable("option", "NBD_OPT_", Opt, {
    Opt.EXPORT_NAME: ("choose an export and end the handshake (no reply on success)", _OPT),
    Opt.ABORT: ("client gives up the handshake", _OPT),
    Opt.LIST: ("ask for the list of exports", _OPT),
    Opt.PEEK_EXPORT: ("withdrawn; never to be used", _OPT),
    Opt.STARTTLS: ("upgrade the connection to TLS", _OPT),
    Opt.INFO: ("ask about an export without choosing it", _OPT),
    Opt.GO: ("ask about an export and choose it, ending the handshake on success", _OPT),
    Opt.STRUCTURED_REPLY: ("ask for structured reply chunks in transmission", _OPT),
    Opt.LIST_META_CONTEXT: ("ask which metadata contexts match the queries", _OPT),
    Opt.SET_META_CONTEXT: ("select metadata contexts for BLOCK_STATUS", _OPT),
    Opt.EXTENDED_HEADERS: ("ask for 64-bit extended request and reply headers", f"{_OPT}; {_EXT}"),
})

OPTION_REPLIES = CodeTable("option reply", "NBD_REP_", Rep, {
    Rep.ACK: ("option accepted, or the end of a list of replies", _REP),
    Rep.SERVER: ("one export in the answer to NBD_OPT_LIST", _REP),
    Rep.INFO: ("one piece of information about an export", _REP),
    Rep.META_CONTEXT: ("one metadata context with the id the server gave it", _REP),
    Rep.ERR_UNSUP: ("option unknown to the server", _REP),
    Rep.ERR_POLICY: ("server refuses by policy", _REP),
    Rep.ERR_INVALID: ("option syntactically or semantically invalid", _REP),
    Rep.ERR_PLATFORM: ("option not available on this platform or build", _REP),
    Rep.ERR_TLS_REQD: ("server requires TLS first", _REP),
    Rep.ERR_UNKNOWN: ("no such export", _REP),
    Rep.ERR_SHUTDOWN: ("server is shutting down", _REP),
    Rep.ERR_BLOCK_SIZE_REQD: ("server will only serve clients that ask for block sizes", _REP),
    Rep.ERR_TOO_BIG: ("request or reply would be too large", _REP),
    Rep.ERR_EXT_HEADER_REQD: ("server requires extended headers", f"{_REP}; {_EXT}"),
})

INFO_TYPES = CodeTable("info type", "NBD_INFO_", Info, {
    Info.EXPORT: ("export size and transmission flags", _INFO),
    Info.NAME: ("canonical export name", _INFO),
    Info.DESCRIPTION: ("human-readable export description", _INFO),
    Info.BLOCK_SIZE: ("minimum, preferred and maximum block sizes", _INFO),
})

COMMANDS = CodeTable("command", "NBD_CMD_", Cmd, {
    Cmd.READ: ("read data", _CMD),
    Cmd.WRITE: ("write data", _CMD),
    Cmd.DISC: ("disconnect softly; no reply", _CMD),
    Cmd.FLUSH: ("persist completed writes", _CMD),
    Cmd.TRIM: ("discard a range (hint)", _CMD),
    Cmd.CACHE: ("prefetch a range into the server's cache", _CMD),
    Cmd.WRITE_ZEROES: ("write zeroes to a range", _CMD),
    Cmd.BLOCK_STATUS: ("query metadata (allocation, dirtiness) of a range", _CMD),
    Cmd.RESIZE: ("change the export size to the offset field (experimental)", f"{_CMD}; {_RESIZE}"),
})

REPLY_TYPES = CodeTable("reply type", "NBD_REPLY_TYPE_", ReplyType, {
    ReplyType.NONE: ("no payload; usually the final DONE chunk", _RT),
    ReplyType.OFFSET_DATA: ("read data at an offset", _RT),
    ReplyType.OFFSET_HOLE: ("a range of a read that reads as zeroes", _RT),
    ReplyType.BLOCK_STATUS: ("block status extents, 32-bit", _RT),
    ReplyType.BLOCK_STATUS_EXT: ("block status extents, 64-bit (extended headers)", f"{_RT}; {_EXT}"),
    ReplyType.ERROR: ("error for the whole request, with a message", _RT),
    ReplyType.ERROR_OFFSET: ("error at one offset of the request, with a message", _RT),
})

ERRORS = CodeTable("error", "NBD_", Errno, {
    Errno.SUCCESS: ("no error", _ERR),
    Errno.EPERM: ("operation not permitted", _ERR),
    Errno.EIO: ("input/output error", _ERR),
    Errno.ENOMEM: ("out of memory", _ERR),
    Errno.EINVAL: ("invalid argument", _ERR),
    Errno.ENOSPC: ("no space left", _ERR),
    Errno.EOVERFLOW: ("value too large", _ERR),
    Errno.ENOTSUP: ("operation not supported", _ERR),
    Errno.ESHUTDOWN: ("server is shutting down", _ERR),
})

# Message header sizes (spec sections "Request message", "Simple reply message",
# "Structured reply chunk message", "Extended reply chunk message").
REQUEST_HEADER = 28
EXTENDED_REQUEST_HEADER = 32
SIMPLE_REPLY_HEADER = 16
STRUCTURED_REPLY_HEADER = 20
EXTENDED_REPLY_HEADER = 32
OPTION_HEADER = 16  # IHAVEOPT, option, length
OPTION_REPLY_HEADER = 20  # magic, option, reply type, length

# Size constraints section: defaults when the server gives no NBD_INFO_BLOCK_SIZE.
DEFAULT_MIN_BLOCK = 1
DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024  # also the largest payload a peer SHOULD NOT deem a denial of service
MAX_MIN_BLOCK = 64 * 1024  # the minimum block size MUST NOT exceed 64 KiB
MIN_PREFERRED_BLOCK = 512  # the preferred block size is at least max(minimum, 512)
MAX_STRING = 4096  # strings (names, queries, messages) MUST NOT be longer
ADVISED_STRING = 256  # and SHOULD NOT be longer than this


def is_rep_error(rep: int) -> bool:
    return bool(rep & REP_ERR_BIT)


# the two chunk types that carry block status extents (32-bit, and 64-bit with extended headers)
STATUS_REPLY_TYPES = frozenset({int(ReplyType.BLOCK_STATUS), int(ReplyType.BLOCK_STATUS_EXT)})


def is_reply_type_error(rtype: int) -> bool:
    return bool(rtype & REPLY_TYPE_ERR_BIT)
