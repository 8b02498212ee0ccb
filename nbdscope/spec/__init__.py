"""The single source of truth for NBD protocol constants."""

from nbdscope.spec.codes import (
    COMMANDS,
    ERRORS,
    INFO_TYPES,
    OPTION_REPLIES,
    OPTIONS,
    REPLY_TYPES,
    Cmd,
    Errno,
    Info,
    Opt,
    Rep,
    ReplyType,
)
from nbdscope.spec.flags import (
    CLIENT_FLAGS,
    COMMAND_FLAGS,
    FLAG_FIELDS,
    HANDSHAKE_FLAGS,
    REPLY_FLAGS,
    TRANSMISSION_FLAGS,
    ClientFlag,
    CommandFlag,
    HandshakeFlag,
    ReplyFlag,
    TransmissionFlag,
)

__all__ = [
    "CLIENT_FLAGS", "COMMANDS", "COMMAND_FLAGS", "ERRORS", "FLAG_FIELDS", "HANDSHAKE_FLAGS",
    "INFO_TYPES", "OPTIONS", "OPTION_REPLIES", "REPLY_FLAGS", "REPLY_TYPES", "TRANSMISSION_FLAGS",
    "ClientFlag", "Cmd", "CommandFlag", "Errno", "HandshakeFlag", "Info", "Opt", "Rep",
    "ReplyFlag", "ReplyType", "TransmissionFlag",
]
