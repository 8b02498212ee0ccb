"""The rule catalog: every rule nbdscope applies, in the order `nbdscope rules` lists them."""

from __future__ import annotations

from nbdscope.analysis.anomaly import INTERNAL_ERROR, RuleInfo
from nbdscope.analysis.rules.advertised import (
    CacheFlagMismatch,
    CommandNotAdvertised,
    FlagNotAdvertised,
    MultiConnWithoutFlag,
    WriteToReadOnly,
)
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.rules.blocks import (
    BlockSizeInvalid,
    PayloadTooLarge,
    RequestBeyondExport,
    SizeNotBlockMultiple,
    UnalignedRequest,
)
from nbdscope.analysis.rules.data import StaleRead
from nbdscope.analysis.rules.errors import ErrorValue
from nbdscope.analysis.rules.extended import ExtendedHeaders
from nbdscope.analysis.rules.extended_negotiation import ExtendedNegotiation
from nbdscope.analysis.rules.extents import UnalignedExtent
from nbdscope.analysis.rules.fields import ReservedBitsSet, TransmissionFlagsInvalid, UnknownCommand
from nbdscope.analysis.rules.framing import CaptureGap, HardDisconnect, MalformedMessage
from nbdscope.analysis.rules.handshake import OptionProtocol
from nbdscope.analysis.rules.metadata import BlockStatus
from nbdscope.analysis.rules.outcome import HandshakeOutcome
from nbdscope.analysis.rules.proxy import ProxyAction
from nbdscope.analysis.rules.refusals import AdvertisedRefused, WriteZeroesError  # commands
from nbdscope.analysis.rules.replies import (
    BadReplyChunk,
    CookieReuse,
    ReplyKind,
    SimpleReplyToStructuredRead,
    UnmatchedReply,
)
from nbdscope.analysis.rules.request_fields import RequestFields  # commands
from nbdscope.analysis.rules.requests import DisconnectProtocol, ReadRequest
from nbdscope.analysis.rules.tls import TlsProtocol
from nbdscope.analysis.rules.tls_decryption import TlsDecryption

ALL_RULES: tuple[type[Rule], ...] = (
    CacheFlagMismatch, UnalignedExtent, SizeNotBlockMultiple, UnalignedRequest, RequestBeyondExport,
    PayloadTooLarge, CommandNotAdvertised, FlagNotAdvertised, WriteToReadOnly, MultiConnWithoutFlag,
    CookieReuse, UnmatchedReply, ReplyKind, SimpleReplyToStructuredRead, BadReplyChunk, ReservedBitsSet,
    TransmissionFlagsInvalid, UnknownCommand, OptionProtocol, TlsProtocol, HardDisconnect,
    StaleRead, CaptureGap, MalformedMessage,
    ExtendedHeaders, ExtendedNegotiation,  # extended headers (j-ext)
    ErrorValue, DisconnectProtocol, ReadRequest,  # replies
    BlockSizeInvalid, BlockStatus,  # tls+sizes: advertised block sizes; metadata contexts and block status
    RequestFields, AdvertisedRefused, WriteZeroesError,  # commands
    HandshakeOutcome,  # blame: why a handshake ended before transmission
    ProxyAction,  # blame: the proxy's own doing
    TlsDecryption,  # tls: decryption with a key log that stopped part-way
)

CATALOGUE: tuple[RuleInfo, ...] = (*(cls.INFO for cls in ALL_RULES), INTERNAL_ERROR)
"""Every id a finding can carry, in the order `nbdscope rules` lists them."""

__all__ = ["ALL_RULES", "CATALOGUE", "Rule"]
