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
    PayloadTooLarge,
    RequestBeyondExport,
    SizeNotBlockMultiple,
    UnalignedExtent,
    UnalignedRequest,
)
from nbdscope.analysis.rules.data import StaleRead
from nbdscope.analysis.rules.fields import ReservedBitsSet, TransmissionFlagsInvalid, UnknownCommand
from nbdscope.analysis.rules.framing import CaptureGap, HardDisconnect, MalformedMessage
from nbdscope.analysis.rules.handshake import OptionProtocol
from nbdscope.analysis.rules.outcome import HandshakeOutcome
from nbdscope.analysis.rules.proxy import ProxyAction
from nbdscope.analysis.rules.replies import (
    BadReplyChunk,
    CookieReuse,
    ReplyKind,
    SimpleReplyToStructuredRead,
    UnmatchedReply,
)
from nbdscope.analysis.rules.tls import TlsProtocol

ALL_RULES: tuple[type[Rule], ...] = (
    CacheFlagMismatch, UnalignedExtent, SizeNotBlockMultiple, UnalignedRequest, RequestBeyondExport,
    PayloadTooLarge, CommandNotAdvertised, FlagNotAdvertised, WriteToReadOnly, MultiConnWithoutFlag,
    CookieReuse, UnmatchedReply, ReplyKind, SimpleReplyToStructuredRead, BadReplyChunk, ReservedBitsSet,
    TransmissionFlagsInvalid, UnknownCommand, OptionProtocol, TlsProtocol, HardDisconnect,
    StaleRead, CaptureGap, MalformedMessage,
    HandshakeOutcome,  # blame: why a handshake ended before transmission
    ProxyAction,  # blame: the proxy's own doing
)

CATALOGUE: tuple[RuleInfo, ...] = (*(cls.INFO for cls in ALL_RULES), INTERNAL_ERROR)
"""Every id a finding can carry, in the order `nbdscope rules` lists them."""

__all__ = ["ALL_RULES", "CATALOGUE", "Rule"]
