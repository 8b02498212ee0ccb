"""Handshake rules: option haggling and TLS (spec "Option types", "Option reply
types", "NBD_INFO_BLOCK_SIZE", "TLS support", "Protocol downgrade attacks")."""

from __future__ import annotations

from dataclasses import dataclass, field

from nbdscope.analysis.anomaly import RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import INFO_TYPES, OPTIONS, ClientFlag, HandshakeFlag, Info, Opt, Rep

MAX_MIN_BLOCK = 1 << 16


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass
class _State:
    structured: bool = False
    export_info_seen: bool = False  # NBD_INFO_EXPORT since the current INFO/GO began
    context_ids: dict[int, str] = field(default_factory=dict)
    info: dict[int, tuple[object, ...]] = field(default_factory=dict)  # NBD_REP_INFO of the current INFO/GO
    request: tuple[str | None, tuple[int, ...]] | None = None  # name and info requests of the current INFO/GO
    info_answer: tuple[tuple[str | None, tuple[int, ...]], dict[int, tuple[object, ...]]] | None = None
    compare_with: dict[int, tuple[object, ...]] | None = None  # what a GO must repeat


class OptionProtocol(Rule):
    INFO = RuleInfo("option-protocol", "error", "either", "Option types; Option reply types",
                    "option haggling broken: payloads that contradict their lengths, replies to options not "
                    "asked, options after the handshake, GO without NBD_INFO_EXPORT, NO_ZEROES not offered, "
                    "context ids reused, SET_META_CONTEXT before structured replies, invalid block sizes, a GO "
                    "answered differently from the INFO just before it")
    EVENTS = (ev.ServerGreeting, ev.ClientFlags, ev.OptionRequest, ev.OptionReply, ev.Malformed, ev.ConnectionEnd)

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, _State] = {}
        self.greeting_flags: dict[str, int] = {}

    def message(self, session: Session, event: ev.Event) -> None:
        st = self.state.setdefault(session.id, _State())
        if isinstance(event, ev.ServerGreeting) and event.handshake_flags is not None:
            self.greeting_flags[session.id] = event.handshake_flags
        elif isinstance(event, ev.ClientFlags):
            server = self.greeting_flags.get(session.id, 0)
            if event.flags & ClientFlag.C_NO_ZEROES and not server & HandshakeFlag.NO_ZEROES:
                self.flag(session, event, "client set NBD_FLAG_C_NO_ZEROES but the server did not offer "
                          "NBD_FLAG_NO_ZEROES")
        elif isinstance(event, ev.Malformed) and event.what == "option-after-handshake":
            self.flag(session, event, "client sent an option after the handshake ended")
        elif isinstance(event, ev.OptionRequest):
            self._request(session, st, event)
        elif isinstance(event, ev.OptionReply):
            self._reply(session, st, event)
        elif isinstance(event, ev.ConnectionEnd):
            self.state.pop(session.id, None)
            self.greeting_flags.pop(session.id, None)

    def _request(self, session: Session, st: _State, event: ev.OptionRequest) -> None:
        """An option starts what its replies are checked against (INFO and GO: the answer to compare)."""
        if event.problem:
            self.flag(session, event, f"{OPTIONS.name(event.option)}: {event.problem}")
        if event.option in (Opt.INFO, Opt.GO):
            st.export_info_seen = False
            st.info = {}
            st.request = (event.export_name, event.info_requests)
        previous, st.info_answer = st.info_answer, None
        st.compare_with = None
        if event.option == Opt.GO and previous is not None and previous[0] == st.request:
            st.compare_with = previous[1]
        if event.option == Opt.SET_META_CONTEXT and not st.structured:
            self.flag(session, event, "NBD_OPT_SET_META_CONTEXT before structured replies or extended headers "
                      "were agreed")
        if event.option in (Opt.SET_META_CONTEXT, Opt.LIST_META_CONTEXT):
            st.context_ids = {}

    def _reply(self, session: Session, st: _State, event: ev.OptionReply) -> None:
        if event.problem:
            self.flag(session, event, f"reply to {OPTIONS.name(event.option)}: {event.problem}")
        if not event.solicited:
            self.flag(session, event, f"server replied to {OPTIONS.name(event.option)}, which the client did not "
                      "ask for (or which was already answered)")
        if event.reply == Rep.ACK and event.option in (Opt.STRUCTURED_REPLY, Opt.EXTENDED_HEADERS):
            st.structured = True
        if event.reply == Rep.INFO and event.info_type == Info.EXPORT:
            st.export_info_seen = True
        if event.reply == Rep.INFO and event.info_type is not None:
            st.info[event.info_type] = (event.size, event.transmission_flags, event.min_block,
                                        event.preferred_block, event.max_payload, event.name, event.description)
        if event.reply == Rep.ACK and event.option == Opt.INFO and st.request is not None:
            st.info_answer = (st.request, st.info)
        if event.reply == Rep.ACK and event.option == Opt.GO and st.compare_with is not None:
            self._same_answer(session, event, st.compare_with, st.info)
        if event.reply == Rep.INFO and event.info_type == Info.BLOCK_SIZE and event.min_block is not None:
            self._block_sizes(session, event)
        if event.reply == Rep.ACK and event.option in (Opt.INFO, Opt.GO) and not st.export_info_seen:
            self.flag(session, event, f"{OPTIONS.name(event.option)} acknowledged without an NBD_INFO_EXPORT "
                      "reply before it", blame="server")
        if event.reply == Rep.META_CONTEXT and event.context_id is not None:
            prior = st.context_ids.get(event.context_id)
            if prior is not None and prior != event.name:
                self.flag(session, event, f"context id {event.context_id} given to both {prior!r} and "
                          f"{event.name!r} in one reply", blame="server", context_id=event.context_id)
            st.context_ids[event.context_id] = event.name or ""

    def _same_answer(self, session: Session, event: ev.OptionReply, info: dict[int, tuple[object, ...]],
                     go: dict[int, tuple[object, ...]]) -> None:
        """A GO right after an INFO with the same parameters must get the same information."""
        labels = ("size", "transmission flags", "minimum block", "preferred block", "maximum payload", "name",
                  "description")
        for itype in sorted(set(info) | set(go)):
            a, b = info.get(itype), go.get(itype)
            if a == b:
                continue
            diffs = [f"{label} {x!r} vs {y!r}" for label, x, y in zip(labels, a or (None,) * 7, b or (None,) * 7,
                                                                        strict=True) if x != y]
            self.flag(session, event, f"NBD_OPT_GO answered differently from the NBD_OPT_INFO just before it with "
                      f"the same parameters ({INFO_TYPES.name(itype)}: {'; '.join(diffs)})", blame="server",
                      info_type=itype)

    def _block_sizes(self, session: Session, e: ev.OptionReply) -> None:
        mn, pref, mx = e.min_block or 0, e.preferred_block or 0, e.max_payload or 0
        problems = []
        if not _pow2(mn) or mn > MAX_MIN_BLOCK:
            problems.append(f"minimum block size {mn} must be a power of two no larger than {MAX_MIN_BLOCK}")
        if not _pow2(pref) or pref < max(mn, 512):
            problems.append(f"preferred block size {pref} must be a power of two at least max(minimum, 512)")
        if mx < pref:
            problems.append(f"maximum payload {mx} is smaller than the preferred block size {pref}")
        for text in problems:
            self.flag(session, e, f"NBD_INFO_BLOCK_SIZE: {text}", blame="server", min_block=mn,
                      preferred_block=pref, max_payload=mx)
