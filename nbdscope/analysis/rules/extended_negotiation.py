"""Negotiating extended headers (branch extension-ext-header of doc/proto.md, "NBD_OPT_EXTENDED_HEADERS"):
the option itself, what its acknowledgement forbids later in the handshake, and the use of
NBD_REP_ERR_EXT_HEADER_REQD."""

from __future__ import annotations

from dataclasses import dataclass

from nbdscope.analysis.anomaly import Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import Opt, Rep
from nbdscope.spec.codes import is_rep_error

_REQD = int(Rep.ERR_EXT_HEADER_REQD)


@dataclass
class _Haggling:
    structured: bool = False  # NBD_OPT_STRUCTURED_REPLY acknowledged
    extended: int | None = None  # frame of the acknowledgement of NBD_OPT_EXTENDED_HEADERS
    ext_data: int = 0  # bytes the last NBD_OPT_EXTENDED_HEADERS carried
    refused_bare: int | None = None  # frame where it was refused while structured replies were not agreed
    queries: tuple[str, ...] = ()  # of the last LIST/SET_META_CONTEXT


def _base_only(queries: tuple[str, ...]) -> bool:
    return bool(queries) and all(q.startswith("base:") for q in queries)


class ExtendedNegotiation(Rule):
    INFO = RuleInfo("extended-negotiation", "error", "either", "NBD_OPT_EXTENDED_HEADERS; NBD_REP_ERR_EXT_HEADER_REQD "
                    "(extension-ext-header)",
                    "NBD_OPT_EXTENDED_HEADERS negotiated wrongly: data on the option, NBD_OPT_EXPORT_NAME or a "
                    "refused NBD_OPT_GO after it, NBD_REP_ERR_EXT_HEADER_REQD where the spec forbids it")
    CHECKS = (
        Check("option-data", ("ext.opt-extended-headers.1",), "NBD_OPT_EXTENDED_HEADERS carrying data",
              blame="client", consequence="the server should refuse the option, leaving compact headers",
              fix="client: send NBD_OPT_EXTENDED_HEADERS with length 0",
              example="NBD_OPT_EXTENDED_HEADERS carries 4 bytes of data but must carry none"),
        Check("option-data-accepted", ("ext.opt-extended-headers.2",),
              "NBD_OPT_EXTENDED_HEADERS with data acknowledged", blame="server",
              consequence="a buggy client's malformed option goes unnoticed",
              fix="server: answer NBD_OPT_EXTENDED_HEADERS with data by NBD_REP_ERR_INVALID",
              example="server acknowledged NBD_OPT_EXTENDED_HEADERS although it carried 4 bytes of data"),
        Check("go-unsupported", ("ext.opt-extended-headers.3", "ext.opt-info.1"),
              "NBD_OPT_GO failed with NBD_REP_ERR_UNSUP after extended headers were acknowledged", blame="server",
              consequence="the client cannot fall back to NBD_OPT_EXPORT_NAME, which extended headers forbid, so "
                          "it cannot connect at all",
              fix="server: implement NBD_OPT_GO before offering extended headers",
              example="NBD_OPT_GO failed with NBD_REP_ERR_UNSUP although NBD_OPT_EXTENDED_HEADERS was acknowledged "
                      "in frame 6"),
        Check("needs-structured-first", ("ext.opt-extended-headers.4",),
              "NBD_OPT_EXTENDED_HEADERS refused before structured replies, accepted after them", blame="server",
              consequence="clients that ask for extended headers first (the usual order) never get them",
              fix="server: accept NBD_OPT_EXTENDED_HEADERS whether or not structured replies were negotiated",
              example="NBD_OPT_EXTENDED_HEADERS acknowledged after structured replies, but refused in frame 6 "
                      "before them"),
        Check("export-name-after-extended", ("ext.opt-extended-headers.5", "ext.opt-export-name.3"),
              "NBD_OPT_EXPORT_NAME after extended headers were acknowledged", blame="client",
              consequence="NBD_OPT_EXPORT_NAME cannot report errors, and the server may reject it",
              fix="client: end the handshake with NBD_OPT_GO once extended headers are agreed",
              example="NBD_OPT_EXPORT_NAME although NBD_OPT_EXTENDED_HEADERS was acknowledged in frame 6"),
        Check("list-ext-header-reqd", ("ext.opt-list-meta-context.3",),
              "NBD_OPT_LIST_META_CONTEXT failed with NBD_REP_ERR_EXT_HEADER_REQD for base: queries or after "
              "extended headers", blame="server",
              consequence="the client is told to negotiate what it has, or what base: contexts never need",
              fix="server: reserve NBD_REP_ERR_EXT_HEADER_REQD for listings with 64-bit contexts, before extended "
                  "headers",
              example="NBD_OPT_LIST_META_CONTEXT failed with NBD_REP_ERR_EXT_HEADER_REQD although extended "
                      "headers were acknowledged in frame 6"),
        Check("set-ext-header-reqd", ("ext.opt-set-meta-context.4",),
              "NBD_OPT_SET_META_CONTEXT limited to base: failed with NBD_REP_ERR_EXT_HEADER_REQD", blame="server",
              consequence="a client with structured replies only cannot use base:allocation",
              fix="server: base: contexts have 32-bit status and never need extended headers",
              example="NBD_OPT_SET_META_CONTEXT for ['base:allocation'] failed with NBD_REP_ERR_EXT_HEADER_REQD"),
        Check("go-requires-extended", ("ext.interop.1",),
              "NBD_OPT_GO failed with NBD_REP_ERR_EXT_HEADER_REQD", blame="server",
              consequence="clients without extended headers (all of Debian 12's) cannot connect",
              fix="server: keep serving compact headers to older clients",
              example="NBD_OPT_GO failed with NBD_REP_ERR_EXT_HEADER_REQD: clients without extended headers "
                      "cannot connect"),
    )
    EVENTS = (ev.OptionRequest, ev.OptionReply, ev.ConnectionEnd)  # after STARTTLS nothing is decoded

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, _Haggling] = {}

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.ConnectionEnd):
            self.state.pop(session.id, None)
            return
        st = self.state.get(session.id)
        if st is None:
            st = self.state[session.id] = _Haggling()
        if isinstance(event, ev.OptionRequest):
            self._request(session, st, event)
        elif isinstance(event, ev.OptionReply):
            self._reply(session, st, event)

    def _request(self, session: Session, st: _Haggling, event: ev.OptionRequest) -> None:
        option = event.option
        if option == Opt.EXTENDED_HEADERS:
            st.ext_data = event.length
            if event.length:
                self.flag(session, event, f"NBD_OPT_EXTENDED_HEADERS carries {event.length} bytes of data but "
                          "must carry none", check="option-data", length=event.length)
        elif option == Opt.EXPORT_NAME and st.extended is not None:
            self.flag(session, event, f"NBD_OPT_EXPORT_NAME although NBD_OPT_EXTENDED_HEADERS was acknowledged in "
                      f"frame {st.extended}", check="export-name-after-extended", acknowledged_frame=st.extended)
        elif option in (Opt.LIST_META_CONTEXT, Opt.SET_META_CONTEXT):
            st.queries = event.queries

    def _reply(self, session: Session, st: _Haggling, event: ev.OptionReply) -> None:
        option, rep = event.option, event.reply
        if option == Opt.STRUCTURED_REPLY and rep == Rep.ACK:
            st.structured = True
        elif option == Opt.EXTENDED_HEADERS:
            self._extended_answer(session, st, event)
        elif option == Opt.GO and rep == Rep.ERR_UNSUP and st.extended is not None:
            self.flag(session, event, f"NBD_OPT_GO failed with NBD_REP_ERR_UNSUP although NBD_OPT_EXTENDED_HEADERS "
                      f"was acknowledged in frame {st.extended}", check="go-unsupported",
                      acknowledged_frame=st.extended)
        elif option == Opt.GO and rep == _REQD:
            self.flag(session, event, "NBD_OPT_GO failed with NBD_REP_ERR_EXT_HEADER_REQD: clients without "
                      "extended headers cannot connect", check="go-requires-extended")
        elif option == Opt.LIST_META_CONTEXT and rep == _REQD:
            if st.extended is not None:
                self.flag(session, event, "NBD_OPT_LIST_META_CONTEXT failed with NBD_REP_ERR_EXT_HEADER_REQD "
                          f"although extended headers were acknowledged in frame {st.extended}",
                          check="list-ext-header-reqd")
            elif st.structured and _base_only(st.queries):  # before any negotiation the spec permits it
                self.flag(session, event, f"NBD_OPT_LIST_META_CONTEXT for {list(st.queries)} failed with "
                          "NBD_REP_ERR_EXT_HEADER_REQD, but base: contexts never need extended headers",
                          check="list-ext-header-reqd")
        elif option == Opt.SET_META_CONTEXT and rep == _REQD and st.structured and _base_only(st.queries):
            self.flag(session, event, f"NBD_OPT_SET_META_CONTEXT for {list(st.queries)} failed with "
                      "NBD_REP_ERR_EXT_HEADER_REQD, but base: contexts never need extended headers",
                      check="set-ext-header-reqd")

    def _extended_answer(self, session: Session, st: _Haggling, event: ev.OptionReply) -> None:
        if event.reply == Rep.ACK:
            if st.ext_data:
                self.flag(session, event, f"server acknowledged NBD_OPT_EXTENDED_HEADERS although it carried "
                          f"{st.ext_data} bytes of data", check="option-data-accepted", length=st.ext_data)
            elif st.refused_bare is not None and st.structured:
                self.flag(session, event, "NBD_OPT_EXTENDED_HEADERS acknowledged after structured replies, but "
                          f"refused in frame {st.refused_bare} before them", check="needs-structured-first",
                          refused_frame=st.refused_bare)
            st.extended = event.frame
            st.structured = True  # extended headers take the place of structured replies
        elif is_rep_error(event.reply) and not st.ext_data and not st.structured:
            st.refused_bare = event.frame

