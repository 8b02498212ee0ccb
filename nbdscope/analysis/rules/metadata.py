"""Metadata contexts and block status (spec "Metadata querying", "The base: metadata namespace",
NBD_CMD_BLOCK_STATUS): which contexts a connection selected, the context names a server offers,
and whether each block status request and reply fits the selection."""

from __future__ import annotations

from dataclasses import dataclass, field

from nbdscope.analysis.anomaly import Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import Cmd, CommandFlag, Opt, Rep
from nbdscope.spec.codes import STATUS_REPLY_TYPES

_STATUS = int(Cmd.BLOCK_STATUS)
_META_OPTIONS = frozenset({int(Opt.SET_META_CONTEXT), int(Opt.LIST_META_CONTEXT)})
_BASE_LEAVES = frozenset({"allocation"})  # the only context the spec defines in base:
_NAMESPACES = frozenset({"base", "nbd-server", "qemu"})  # the spec's own, its server's, and the registered ones


def _c(name: str, requires: tuple[str, ...], summary: str, consequence: str, fix: str, example: str,
       **kw: object) -> Check:
    return Check(name, requires, summary, consequence=consequence, fix=fix, example=example, **kw)  # type: ignore[arg-type]


_PER_CONTEXT = ("metadata.2", "reply-type-block-status.2", "cmd-block-status.4")
_MISREAD = "the client reads status under the wrong meaning (dirty bits as holes): sparse copies and backups corrupt"


@dataclass
class _Meta:
    """One connection's context negotiation and the block status replies under way."""

    set_export: str | None = None  # export named by the last SET_META_CONTEXT
    queries: tuple[str, ...] = ()
    replies: dict[int, list[int]] = field(default_factory=dict)  # cookie -> context ids of its status chunks


class BlockStatus(Rule):
    INFO = RuleInfo("block-status", "error", "either", "Metadata querying; NBD_CMD_BLOCK_STATUS",
                    "block status used outside the contexts negotiated: requests without a context, status chunks "
                    "for contexts never selected, missing or repeated, simple replies, and bad context names")
    CHECKS = (
        _c("unknown-context", _PER_CONTEXT, "status chunk for a context id SET_META_CONTEXT never selected",
           _MISREAD, "server: answer only with the ids it gave in NBD_REP_META_CONTEXT",
           "status chunk for context id 9, which SET_META_CONTEXT never selected (selected: 1)", blame="server"),
        _c("duplicate-context", _PER_CONTEXT, "two status chunks for one context in one reply",
           "the client cannot tell which to believe", "server: send one chunk per selected context",
           "second status chunk for context 1 in the reply to cookie 0x5", blame="server"),
        _c("missing-context", _PER_CONTEXT, "a successful reply lacks a status chunk for a selected context",
           "the client waits for or misses status it asked for", "server: send one chunk per selected context",
           "successful block status reply to cookie 0x5 lacks context 2 (qemu:dirty-bitmap:b)", blame="server"),
        _c("simple-reply", ("metadata.5", "cmd-block-status.4"), "successful simple reply to NBD_CMD_BLOCK_STATUS",
           "no status is delivered; a client may wait forever or misparse", "server: answer with status chunks",
           "simple reply with error 0 to NBD_CMD_BLOCK_STATUS cookie 0x5", blame="server"),
        _c("simple-error", ("cmd-block-status.13",), "block status error sent as a simple reply",
           "no error message reaches the user", "server: report errors in an error chunk",
           "NBD_CMD_BLOCK_STATUS cookie 0x5 failed with a simple reply (error 22)", blame="server"),
        _c("no-structured", ("metadata.6",), "NBD_CMD_BLOCK_STATUS without structured replies",
           "the server has no way to answer", "client: negotiate structured replies and a context first",
           "NBD_CMD_BLOCK_STATUS cookie 0x5 although structured replies were not negotiated", blame="client"),
        _c("no-context", ("metadata.1", "metadata.3", "cmd-block-status.3"), "NBD_CMD_BLOCK_STATUS without a "
           "selected context", "the server cannot answer it", "client: select a context with SET_META_CONTEXT",
           "NBD_CMD_BLOCK_STATUS cookie 0x5 although no metadata context was selected", blame="client"),
        _c("other-export", ("metadata.3", "cmd-block-status.3"), "contexts were selected for another export than "
           "the one in use", "the context ids may mean nothing for this export",
           "client: send SET_META_CONTEXT for the export it then opens",
           "NBD_CMD_BLOCK_STATUS on export 'b' but SET_META_CONTEXT named 'a'", blame="client"),
        _c("no-context-accepted", ("metadata.4",), "server answered success to BLOCK_STATUS without contexts",
           "the client is told nothing useful", "server: fail it with NBD_EINVAL",
           "server answered success to NBD_CMD_BLOCK_STATUS cookie 0x5 with no context selected", blame="server"),
        _c("zero-length-request", ("cmd-block-status.1",), "NBD_CMD_BLOCK_STATUS of length 0",
           "the server's behaviour is unspecified", "client: ask about at least one byte",
           "NBD_CMD_BLOCK_STATUS cookie 0x5 has length 0", blame="client"),
        _c("zero-length-hangup", ("cmd-block-status.2",), "server hung up on a zero-length block status request",
           "the client loses its connection over a harmless query", "server: answer or fail it, do not hang up",
           "server closed the connection with NBD_CMD_BLOCK_STATUS of length 0 (cookie 0x5) unanswered",
           blame="server"),
        _c("bad-context-name", ("metadata.7", "opt-list-meta-context.11"),
           "context name without a non-empty namespace and a colon",
           "clients cannot tell which namespace defines the status bits", "server: name contexts namespace:leaf",
           "NBD_REP_META_CONTEXT name 'allocation' has no namespace and colon", blame="server"),
        _c("unregistered-namespace", ("metadata.9",), "context in a namespace the spec neither defines nor "
           "registers", "clients cannot look up its meaning", "server: use x-* or register the namespace",
           "NBD_REP_META_CONTEXT 'acme:dirty' is in the unregistered namespace 'acme'", blame="server"),
        _c("base-wildcard-selected", ("base-ns.1",), "SET_META_CONTEXT selected a context for a bare 'base:' "
           "query", "the client receives status chunks it never asked for",
           "server: ignore 'base:' in SET_META_CONTEXT", "SET_META_CONTEXT selected 'base:allocation' although "
           "the only base: query was the wildcard 'base:'", blame="server"),
        _c("empty-leaf-selected", ("metadata.12",), "SET_META_CONTEXT selected a context for an empty leaf-name "
           "query", "the client receives status chunks it never asked for",
           "server: select nothing for 'namespace:' in SET_META_CONTEXT",
           "SET_META_CONTEXT selected 'qemu:dirty-bitmap:b' for the query 'qemu:'", blame="server"),
        _c("base-unknown-leaf-error", ("base-ns.3",), "SET/LIST_META_CONTEXT failed although its queries were "
           "only unknown base: leaves", "clients probing for future base contexts are refused",
           "server: ignore unknown base: leaf-names", "NBD_OPT_SET_META_CONTEXT with 'base:future' failed with "
           "NBD_REP_ERR_INVALID", blame="server"),
    )
    EVENTS = (ev.OptionRequest, ev.OptionReply, ev.Request, ev.SimpleReply, ev.ReplyChunk, ev.ConnectionEnd)
    FOR_COMMANDS = frozenset({_STATUS})  # requests and replies: block status only

    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, _Meta] = {}

    def message(self, session: Session, event: ev.Event) -> None:
        m = self.meta.get(session.id)
        if m is None:
            m = self.meta[session.id] = _Meta()
        if isinstance(event, ev.OptionRequest) and event.option == Opt.SET_META_CONTEXT:
            # a request the capture cut: its queries are not all known, so none are judged against
            m.set_export, m.queries = event.export_name, event.queries if event.lost is None else ()
        elif isinstance(event, ev.OptionReply) and event.option in _META_OPTIONS and not session.hidden:
            self._option_reply(session, m, event)
        elif isinstance(event, ev.Request) and event.command == _STATUS:
            self._request(session, m, event)
        elif isinstance(event, ev.SimpleReply) and event.command == _STATUS:
            m.replies.pop(event.cookie, None)
            if event.error == 0:
                self.flag(session, event, f"simple reply with error 0 to NBD_CMD_BLOCK_STATUS cookie {event.cookie:#x}",
                          check="simple-reply", cookie=event.cookie)
            elif session.structured_replies:
                self.flag(session, event, f"NBD_CMD_BLOCK_STATUS cookie {event.cookie:#x} failed with a simple "
                          f"reply (error {event.error})", check="simple-error", cookie=event.cookie)
        elif isinstance(event, ev.ReplyChunk) and event.command == _STATUS:
            self._chunk(session, m, event)
        elif isinstance(event, ev.ConnectionEnd):
            self._ended(session, event)

    def _option_reply(self, session: Session, m: _Meta, event: ev.OptionReply) -> None:
        if event.reply == Rep.META_CONTEXT and event.name is not None and event.lost is None:  # (a cut name: a prefix)
            self._name(session, event, event.name)
            if event.option == Opt.SET_META_CONTEXT:
                self._selected(session, m, event, event.name)
        elif event.reply == Rep.ERR_INVALID and event.option == Opt.SET_META_CONTEXT and m.queries and \
                session.structured_replies is not False and all(
                    q.startswith("base:") and q[5:] and q[5:] not in _BASE_LEAVES for q in m.queries):
            self.flag(session, event, f"NBD_OPT_SET_META_CONTEXT with {', '.join(map(repr, m.queries))} failed with "
                      "NBD_REP_ERR_INVALID (unknown base: leaves must be ignored)", check="base-unknown-leaf-error")

    def _name(self, session: Session, event: ev.OptionReply, name: str) -> None:
        namespace, colon, _leaf = name.partition(":")
        if not colon or not namespace:
            self.flag(session, event, f"NBD_REP_META_CONTEXT name {name!r} has no namespace and colon",
                      check="bad-context-name", name=name)
        elif namespace not in _NAMESPACES and not namespace.startswith("x-"):
            self.flag(session, event, f"NBD_REP_META_CONTEXT {name!r} is in the unregistered namespace "
                      f"{namespace!r}", check="unregistered-namespace", name=name)

    def _selected(self, session: Session, m: _Meta, event: ev.OptionReply, name: str) -> None:
        """A context SET_META_CONTEXT selected: was it asked for by more than a wildcard?"""
        namespace = name.partition(":")[0]
        same = [q for q in m.queries if q.partition(":")[0] == namespace]
        if not same or any(q.partition(":")[2] for q in same):
            return  # asked for by a leaf-name query (or the request was not seen)
        check = "base-wildcard-selected" if namespace == "base" else "empty-leaf-selected"
        self.flag(session, event, f"SET_META_CONTEXT selected {name!r} although the only {namespace}: query was the "
                  f"wildcard {namespace + ':'!r}", check=check, name=name)

    def _request(self, session: Session, m: _Meta, event: ev.Request) -> None:
        if event.length == 0 and event.effect_length in (None, 0):
            self.flag(session, event, f"NBD_CMD_BLOCK_STATUS cookie {event.cookie:#x} has length 0",
                      check="zero-length-request", cookie=event.cookie)
        if not session.reliable or session.structured_replies is None:
            return  # the handshake was not (fully) seen: what was negotiated is unknown
        if not session.structured_replies and not session.extended_headers:
            self.flag(session, event, f"NBD_CMD_BLOCK_STATUS cookie {event.cookie:#x} although structured replies "
                      "were not negotiated", check="no-structured", cookie=event.cookie)
        elif not session.meta_contexts:
            self.flag(session, event, f"NBD_CMD_BLOCK_STATUS cookie {event.cookie:#x} although no metadata context "
                      "was selected", check="no-context", cookie=event.cookie)
            session.await_reply(event.cookie, self._no_context_reply)
        elif m.set_export is not None and session.export_name is not None and m.set_export != session.export_name:
            self.flag(session, event, f"NBD_CMD_BLOCK_STATUS on export {session.export_name!r} but SET_META_CONTEXT "
                      f"named {m.set_export!r}", check="other-export", cookie=event.cookie)
        else:
            m.replies[event.cookie] = []

    def _no_context_reply(self, session: Session, event: ev.Reply) -> None:
        if not event.failed:
            self.flag(session, event, f"server answered success to NBD_CMD_BLOCK_STATUS cookie {event.cookie:#x} "
                      "with no context selected", check="no-context-accepted", cookie=event.cookie)

    def _chunk(self, session: Session, m: _Meta, event: ev.ReplyChunk) -> None:
        seen = m.replies.get(event.cookie)
        if seen is None:
            return  # not a request judged here (no contexts, or the handshake unseen)
        wanted = self._wanted(session, event)
        ctx = event.context_id
        if event.reply_type in STATUS_REPLY_TYPES and ctx is not None:
            if ctx not in session.meta_contexts:
                chosen = ", ".join(str(c) for c in sorted(session.meta_contexts))
                self.flag(session, event, f"status chunk for context id {ctx}, which SET_META_CONTEXT never "
                          f"selected (selected: {chosen})", check="unknown-context", context_id=ctx,
                          cookie=event.cookie)
            elif ctx in seen:
                self.flag(session, event, f"second status chunk for context {ctx} in the reply to cookie "
                          f"{event.cookie:#x}", check="duplicate-context", context_id=ctx, cookie=event.cookie)
            seen.append(ctx)
        if event.error is not None:
            m.replies[event.cookie] = seen = [-1]  # an error reply owes no status chunks
        if event.completes:
            del m.replies[event.cookie]
            missing = sorted(set(wanted) - set(seen))
            if missing and not event.failed and -1 not in seen:
                names = ", ".join(f"{c} ({session.meta_contexts.get(c, '?')})" for c in missing)
                self.flag(session, event, f"successful block status reply to cookie {event.cookie:#x} lacks context "
                          f"{names}", check="missing-context", cookie=event.cookie, missing=missing)

    @staticmethod
    def _wanted(session: Session, event: ev.ReplyChunk) -> tuple[int, ...]:
        flight = session.in_flight.get(event.cookie)
        if flight is not None and flight.request.context_ids and (event.request_flags or 0) & CommandFlag.PAYLOAD_LEN:
            # the payload form asks for some contexts only; an id never negotiated is owed nothing (a success
            # for it is extended-headers.payload-form-bad-ids-accepted)
            return tuple(c for c in flight.request.context_ids if c in session.meta_contexts)
        return tuple(session.meta_contexts)

    def _ended(self, session: Session, event: ev.ConnectionEnd) -> None:
        self.meta.pop(session.id, None)
        if event.soft or event.by != "s2c" or not session.reliable or session.hidden:
            return
        for cookie, command, _frame in event.in_flight:
            flight = session.in_flight.get(cookie)
            if command == _STATUS and flight is not None and flight.request.length == 0 \
                    and flight.request.effect_length in (None, 0):
                self.flag(session, event, f"server closed the connection with NBD_CMD_BLOCK_STATUS of length 0 "
                          f"(cookie {cookie:#x}) unanswered", check="zero-length-hangup", cookie=cookie)
                return
