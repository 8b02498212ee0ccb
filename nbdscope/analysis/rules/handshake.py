"""Option haggling (spec "Newstyle negotiation", "Fixed newstyle negotiation", "Handshake flags",
"Client flags", "Option types", "Option reply types"): the greeting and flags, each option and
the replies that answer it, one at a time.

The rule keeps its own idea of the options awaiting an answer (``_State.pending``): a reply that
names the wrong option still answers it, so one server mistake does not turn into a string of
client findings. Sequencing checks are skipped once the capture lost bytes in the session."""

from __future__ import annotations

from dataclasses import dataclass, field

from nbdscope.analysis.anomaly import RuleInfo
from nbdscope.analysis.rules import handshake_checks, info_answers
from nbdscope.analysis.rules import option_strings as strs
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.rules.info_answers import InfoValues
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.decoder.handshake import OPTION_KEEP
from nbdscope.spec import INFO_TYPES, OPTION_REPLIES, OPTIONS, ClientFlag, HandshakeFlag, Info, Opt, Rep
from nbdscope.spec.codes import ADVISED_STRING, MAX_STRING, OPTION_REPLY_HEADER, is_rep_error

NBD_PORT = 10809
_KNOWN_CFLAGS = int(ClientFlag.C_FIXED_NEWSTYLE | ClientFlag.C_NO_ZEROES)  # int: ~ on the enum drops unknown bits
_NO_DATA: dict[int, str] = {
    Opt.LIST: "data-on-list", Opt.STRUCTURED_REPLY: "data-on-structured-reply", Opt.ABORT: "data-on-abort"}
# data on NBD_OPT_STARTTLS and NBD_OPT_EXTENDED_HEADERS: tls-protocol.starttls-data, extended-negotiation.option-data
_JUDGED_ELSEWHERE = frozenset({int(Opt.STARTTLS), int(Opt.EXTENDED_HEADERS)})


@dataclass
class _State:
    hflags: int | None = None  # newstyle greeting's handshake flags
    cflags: int | None = None
    bad_cflags: int = 0  # client flag bits the server had to reject
    pending: list[ev.OptionRequest] = field(default_factory=list)  # options awaiting their final reply, in order
    early: list[int] = field(default_factory=list)  # options answered before their payload was in
    replies: int = 0  # non-final replies to the oldest pending option so far
    aborted: int | None = None  # frame of NBD_OPT_ABORT
    shutdown: int | None = None  # frame of NBD_REP_ERR_SHUTDOWN
    go_unsup: int | None = None  # frame of NBD_REP_ERR_UNSUP to NBD_OPT_GO, until NBD_OPT_EXPORT_NAME is tried
    structured: bool = False
    structured_frame: int | None = None  # the NBD_OPT_STRUCTURED_REPLY acknowledgement
    ended_by: str | None = None  # how transmission began
    flagged: set[str] = field(default_factory=set)  # once-per-session checks already reported
    context_ids: dict[int, str] = field(default_factory=dict)
    info_frames: dict[int, int] = field(default_factory=dict)  # info type -> frame, in the current INFO/GO
    info: dict[int, InfoValues] = field(default_factory=dict)  # NBD_REP_INFO of the current INFO/GO
    request: tuple[str | None, tuple[int, ...]] | None = None  # name and info requests of the current INFO/GO
    info_answer: tuple[tuple[str | None, tuple[int, ...]], dict[int, InfoValues]] | None = None
    compare_with: dict[int, InfoValues] | None = None  # what a GO must repeat
    cut: bool = False  # the capture cut a message of the current INFO/GO (its answer cannot be judged whole)


class OptionProtocol(Rule):
    # the summary is also in dissectors/nbdscope.lua (generated): kept as it was so the plugin stays current
    INFO = RuleInfo("option-protocol", "error", "either", "Option types; Option reply types",
                    "option haggling broken: payloads that contradict their lengths, replies to options not "
                    "asked, options after the handshake, GO without NBD_INFO_EXPORT, NO_ZEROES not offered, "
                    "context ids reused, SET_META_CONTEXT before structured replies, invalid block sizes, a GO "
                    "answered differently from the INFO just before it")
    CHECKS = handshake_checks.CHECKS
    EVENTS = (ev.ServerGreeting, ev.ClientFlags, ev.OptionRequest, ev.OptionReply, ev.ExportNameReply,
              ev.TransmissionStart, ev.Malformed, ev.ConnectionEnd)

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, _State] = {}

    def message(self, session: Session, event: ev.Event) -> None:
        st = self.state.setdefault(session.id, _State())
        if isinstance(event, ev.OptionRequest):
            self._request(session, st, event)
        elif isinstance(event, ev.OptionReply):
            self._reply(session, st, event)
        elif isinstance(event, ev.ServerGreeting):
            self._greeting(session, st, event)
        elif isinstance(event, ev.ClientFlags):
            self._client_flags(session, st, event)
        elif isinstance(event, ev.ExportNameReply):
            self._export_reply(session, st, event)
            st.pending.clear()
        elif isinstance(event, ev.TransmissionStart):
            st.ended_by = event.how
        elif isinstance(event, ev.Malformed) and event.what == "option-after-handshake":
            if st.ended_by == "go":
                self.flag(session, event, "client sent an option after NBD_OPT_GO was acknowledged",
                          check="option-after-handshake")
            else:
                self.flag(session, event, "client sent an option after the handshake ended"
                          + (" with NBD_OPT_EXPORT_NAME" if st.ended_by == "export-name" else ""),
                          check="option-after-export-name")
        elif isinstance(event, ev.ConnectionEnd):
            if st.go_unsup is not None and not session.transmission and not session.lost_sync \
                    and event.how != "end-of-capture":
                self._no_fallback(session, st, event, "closed the connection")
            self.state.pop(session.id, None)

    # ------------------------------------------------------------ greeting and flags

    def _greeting(self, session: Session, st: _State, event: ev.ServerGreeting) -> None:
        if event.style == "oldstyle":
            if session.server.port == NBD_PORT:
                self.flag(session, event, f"oldstyle greeting on port {NBD_PORT}, reserved for newstyle",
                          check="oldstyle-on-newstyle-port")
            return
        st.hflags = event.handshake_flags or 0  # undefined bits: reserved-bits-set

    def _client_flags(self, session: Session, st: _State, event: ev.ClientFlags) -> None:
        st.cflags = flags = event.flags
        server = st.hflags or 0
        unknown = flags & ~_KNOWN_CFLAGS  # reported by reserved-bits-set; here: the server must then drop
        unoffered = 0
        if flags & ClientFlag.C_NO_ZEROES and not server & HandshakeFlag.NO_ZEROES:
            unoffered |= ClientFlag.C_NO_ZEROES
            self.flag(session, event, "client set NBD_FLAG_C_NO_ZEROES but the server did not offer "
                      "NBD_FLAG_NO_ZEROES", check="no-zeroes-not-offered")
        if server & HandshakeFlag.FIXED_NEWSTYLE and not flags & ClientFlag.C_FIXED_NEWSTYLE:
            self.flag(session, event, f"client flags {flags:#010x} lack NBD_FLAG_C_FIXED_NEWSTYLE although the "
                      "server offered fixed newstyle", check="no-fixed-newstyle-flag")
        st.bad_cflags = unknown | unoffered

    def _export_reply(self, session: Session, st: _State, event: ev.ExportNameReply) -> None:
        if st.hflags is None or st.cflags is None or session.lost_sync:
            return
        agreed = bool(st.hflags & HandshakeFlag.NO_ZEROES and st.cflags & ClientFlag.C_NO_ZEROES)
        if agreed and event.zeroes and event.lost is None:  # zeroes seen, the rest lost: not proof enough
            self.flag(session, event, "124 zero bytes after the export-name reply although NO_ZEROES was agreed",
                      check="zeroes-despite-no-zeroes")
        elif not agreed and not event.zeroes:
            self.flag(session, event, "export-name reply without its 124 zero bytes although the client did not "
                      "set NBD_FLAG_C_NO_ZEROES", check="zeroes-missing")

    # ------------------------------------------------------------ options

    def _request(self, session: Session, st: _State, event: ev.OptionRequest) -> None:
        name = OPTIONS.name(event.option)
        sequenced = session.saw_start and not session.lost_sync
        if sequenced and st.aborted is not None:
            self.flag(session, event, f"{name} after NBD_OPT_ABORT (frame {st.aborted})", check="option-after-abort")
        elif sequenced and st.pending and event.option != Opt.ABORT:
            self.flag(session, event, f"{name} sent while {OPTIONS.name(st.pending[0].option)} (frame "
                      f"{st.pending[0].frame}) still awaits its final reply", check="option-before-reply")
        elif sequenced and st.shutdown is not None and event.option != Opt.ABORT:
            self.flag(session, event, f"{name} after NBD_REP_ERR_SHUTDOWN (frame {st.shutdown}) instead of "
                      "NBD_OPT_ABORT", check="option-after-shutdown")
        if event.option in st.early:
            st.early.remove(event.option)  # already answered: nothing awaits
        else:
            st.pending.append(event)
            if len(st.pending) == 1:
                st.replies = 0
        if event.option == Opt.ABORT:
            st.aborted = event.frame
            if st.go_unsup is not None and sequenced:
                self._no_fallback(session, st, event, "ended the handshake with NBD_OPT_ABORT")
        elif event.option == Opt.EXPORT_NAME:
            st.go_unsup = None
        if event.length > OPTION_KEEP:
            self.flag(session, event, f"{name} of {event.length} bytes: nbdscope decoded its first {OPTION_KEEP} "
                      "bytes", check="payload-not-held", length=event.length)
        elif event.problem:
            self._request_problem(session, event, name)
        self._request_strings(session, event, name)
        self._request_state(session, st, event, name)

    def _no_fallback(self, session: Session, st: _State, event: ev.Event, how: str) -> None:
        self.flag(session, event, f"client {how} after NBD_OPT_GO was unsupported (frame {st.go_unsup}), without "
                  "trying NBD_OPT_EXPORT_NAME", check="no-fallback-to-export-name", blame="client")
        st.go_unsup = None

    def _request_problem(self, session: Session, event: ev.OptionRequest, name: str) -> None:
        if event.option in _JUDGED_ELSEWHERE:
            return
        check = _NO_DATA.get(event.option)
        if check is None:
            named = event.option in (Opt.INFO, Opt.GO) and event.export_name is None
            check = "info-name-too-long" if named else "request-malformed"
        self.flag(session, event, f"{name}: {event.problem}", check=check, length=event.length)

    def _request_strings(self, session: Session, event: ev.OptionRequest, name: str) -> None:
        if event.export_name is not None:
            self._string(session, event, f"export name in {name}", event.export_name)
        for q in event.queries:
            self._string(session, event, f"query in {name}", q)
            if not strs.has_namespace(q):
                check = "list-query-without-namespace" if event.option == Opt.LIST_META_CONTEXT \
                    else "set-query-without-namespace"
                self.flag(session, event, f"{name} query {strs.shown(q)} has no namespace", check=check, query=q)

    def _request_state(self, session: Session, st: _State, event: ev.OptionRequest, name: str) -> None:
        """What an option starts: the INFO/GO answer to compare, the contexts, structured replies."""
        if event.option in (Opt.INFO, Opt.GO):
            dup = sorted({i for i in event.info_requests if event.info_requests.count(i) > 1})
            for itype in dup:
                self.flag(session, event, f"{name} asks for {INFO_TYPES.name(itype)} "
                          f"{event.info_requests.count(itype)} times", check="duplicate-info-request", info_type=itype)
            st.info, st.info_frames = {}, {}
            st.request = (event.export_name, event.info_requests)
            st.cut = event.lost is not None
        previous, st.info_answer = st.info_answer, None
        st.compare_with = None
        if event.option == Opt.GO and previous is not None and previous[0] == st.request:
            st.compare_with = previous[1]
        known = session.saw_start and not session.lost_sync  # else structured replies may have been agreed unseen
        if event.option == Opt.SET_META_CONTEXT and not st.structured and known:
            self.flag(session, event, "NBD_OPT_SET_META_CONTEXT before structured replies or extended headers "
                      "were agreed", check="set-meta-context-before-structured")
        if event.option == Opt.LIST_META_CONTEXT and not st.structured and known:
            self.flag(session, event, "NBD_OPT_LIST_META_CONTEXT before structured replies or extended headers "
                      "were agreed", check="list-meta-context-before-structured")
        if event.option == Opt.STRUCTURED_REPLY and st.structured_frame is not None:
            self.flag(session, event, f"NBD_OPT_STRUCTURED_REPLY again after the acknowledgement in frame "
                      f"{st.structured_frame}", check="repeated-structured-reply")
        if event.option in (Opt.SET_META_CONTEXT, Opt.LIST_META_CONTEXT):
            st.context_ids = {}

    def _string(self, session: Session, event: ev.Event, what: str, text: str) -> None:
        f = strs.facts(text)
        if f.nul_at is not None:
            self.flag(session, event, f"{what} contains NUL at index {f.nul_at}: {strs.shown(text)}",
                      check="string-has-nul")
        if f.nbytes > MAX_STRING:
            self.flag(session, event, f"{what} is {f.nbytes} bytes (limit {MAX_STRING})", check="string-too-long",
                      nbytes=f.nbytes)
        elif f.nbytes > ADVISED_STRING:
            self.flag(session, event, f"{what} is {f.nbytes} bytes (advised at most {ADVISED_STRING})",
                      check="string-long", nbytes=f.nbytes)

    # ------------------------------------------------------------ replies

    def _reply(self, session: Session, st: _State, event: ev.OptionReply) -> None:
        final = event.reply == Rep.ACK or is_rep_error(event.reply)
        # the answer goes to the oldest option of its number, else to the oldest of all
        cur = next((o for o in st.pending if o.option == event.option), st.pending[0] if st.pending else None)
        sequenced = session.saw_start and not session.lost_sync
        if cur is None:
            if event.solicited and final:
                st.early.append(event.option)  # answered from the header while the payload was arriving
            elif sequenced:
                self.flag(session, event, f"server replied to {OPTIONS.name(event.option)}, which the client did "
                          "not ask for (or which was already answered)", check="reply-to-unasked")
                return
        if sequenced:
            self._once(session, st, event)
        if cur is not None and cur.option == Opt.EXPORT_NAME:
            self.flag(session, event, f"option reply {OPTION_REPLIES.name(event.reply)} to NBD_OPT_EXPORT_NAME "
                      f"(frame {cur.frame})", check="reply-to-export-name")
            if final:
                st.pending.clear()
            return
        if cur is not None and event.option != cur.option and sequenced:
            self.flag(session, event, f"reply names {OPTIONS.name(event.option)} while {OPTIONS.name(cur.option)} "
                      f"(frame {cur.frame}) awaits its reply", check="reply-wrong-option")
        self._answer(session, st, event, cur, final)

    def _answer(self, session: Session, st: _State, event: ev.OptionReply, cur: ev.OptionRequest | None,
                final: bool) -> None:
        """A reply taken as answering ``cur`` (whatever option it names): its contents, then the outcome."""
        option = cur.option if cur is not None else event.option
        name = OPTIONS.name(option)
        if event.lost is not None:
            st.cut = True
        if event.length > OPTION_KEEP:
            self.flag(session, event, f"reply to {name} of {event.length} bytes: nbdscope decoded its first "
                      f"{OPTION_KEEP} bytes", check="payload-not-held", length=event.length)
        elif event.problem:
            self._reply_problem(session, event, name)
        self._reply_strings(session, event, name)
        if event.reply == Rep.INFO and event.info_type is not None:
            self._info(session, st, event, name)
        elif event.reply == Rep.META_CONTEXT and event.context_id is not None:
            self._context(session, st, event, cur)
        elif option == Opt.LIST_META_CONTEXT and not final:
            self.flag(session, event, f"{OPTION_REPLIES.name(event.reply)} in the answer to {name}",
                      check="context-reply-type")
        if final:
            self._final(session, st, event, cur, option, name)
            if cur is not None:
                st.pending.remove(cur)
            st.replies = 0
        else:
            st.replies += 1

    def _once(self, session: Session, st: _State, event: ev.OptionReply) -> None:
        """Findings about the server's choice to answer at all, reported on its first reply."""
        if st.hflags is not None and not st.hflags & HandshakeFlag.FIXED_NEWSTYLE \
                and "no-fixed" not in st.flagged:
            st.flagged.add("no-fixed")
            self.flag(session, event, "option reply although the greeting did not offer fixed newstyle",
                      check="replies-without-fixed-newstyle")
        if st.bad_cflags and "bad-cflags" not in st.flagged:
            st.flagged.add("bad-cflags")
            self.flag(session, event, f"server answered options after client flags {st.cflags or 0:#010x} it had to "
                      "reject", check="kept-bad-client-flags", flags=st.cflags)

    def _reply_problem(self, session: Session, event: ev.OptionReply, name: str) -> None:
        check = "reply-malformed"
        if event.reply == Rep.INFO:
            check = {None: "info-too-short", Info.EXPORT: "info-export-length",
                     Info.BLOCK_SIZE: "info-block-size-length"}.get(event.info_type, check)  # type: ignore[arg-type]
        elif event.reply == Rep.SERVER and event.length >= 4:
            check = "server-name-too-long"
        self.flag(session, event, f"reply to {name}: {event.problem}", check=check, length=event.length)

    def _reply_strings(self, session: Session, event: ev.OptionReply, name: str) -> None:
        kind = OPTION_REPLIES.name(event.reply)
        for label, text in (("name", event.name), ("description", event.description), ("message", event.message)):
            if text is not None:
                self._string(session, event, f"{label} in {kind} to {name}", text)
        if event.reply == Rep.META_CONTEXT and event.name is not None and event.lost is None:
            if not strs.facts(event.name).valid_utf8:
                self.flag(session, event, f"NBD_REP_META_CONTEXT name {strs.shown(event.name)} is not valid UTF-8",
                          check="context-name-not-utf8")
            # a name without namespace: block-status.bad-context-name

    def _info(self, session: Session, st: _State, event: ev.OptionReply, name: str) -> None:
        itype = event.info_type
        assert itype is not None
        first = st.info_frames.get(itype)
        if first is not None:
            self.flag(session, event, f"{INFO_TYPES.name(itype)} sent twice for {name} (first in frame {first})",
                      check="duplicate-info-reply", info_type=itype)
        else:
            st.info_frames[itype] = event.frame
        st.info[itype] = (event.size, event.transmission_flags, event.min_block, event.preferred_block,
                          event.max_payload, event.name, event.description)
        # the sizes' relations (powers of two, bounds) are block-size-invalid's

    def _context(self, session: Session, st: _State, event: ev.OptionReply, cur: ev.OptionRequest | None) -> None:
        """Context ids bind only for SET_META_CONTEXT; a LIST answer's ids are reserved (0 advised)."""
        cid, cname = event.context_id, event.name or ""
        assert cid is not None
        if event.option == Opt.LIST_META_CONTEXT:
            if cid and "list-id" not in st.flagged:
                st.flagged.add("list-id")
                self.flag(session, event, f"NBD_REP_META_CONTEXT to LIST carries context id {cid}",
                          check="list-context-id-nonzero", context_id=cid)
            return
        if event.option != Opt.SET_META_CONTEXT:
            return
        if event.lost is not None:
            st.context_ids.setdefault(cid, cname)
            return  # only part of the name was captured
        if cur is not None and cur.option == Opt.SET_META_CONTEXT and not cur.queries and not cur.problem \
                and cur.lost is None:
            self.flag(session, event, f"NBD_REP_META_CONTEXT {strs.shown(cname)} for a SET_META_CONTEXT with no "
                      "queries", check="contexts-for-no-queries")
        prior = st.context_ids.get(cid)
        if prior is not None and prior != cname:
            self.flag(session, event, f"context id {cid} given to both {prior!r} and {cname!r} in one reply",
                      check="context-id-reused", context_id=cid)
        st.context_ids[cid] = cname

    def _final(self, session: Session, st: _State, event: ev.OptionReply, cur: ev.OptionRequest | None,
               option: int, name: str) -> None:
        """The answer is complete: what it must (not) be, given the request."""
        rep, rep_name = event.reply, OPTION_REPLIES.name(event.reply)
        served = rep == Rep.ACK or (st.replies > 0 and not is_rep_error(rep))
        data = cur is not None and cur.length > 0
        self._remember(st, event, option)
        if option == Opt.ABORT and rep != Rep.ACK:
            self.flag(session, event, f"NBD_OPT_ABORT answered with {rep_name}", check="abort-not-acked")
        if cur is None:
            return
        where = f"(frame {cur.frame})"
        if option == Opt.LIST and data and served:
            self.flag(session, event, f"NBD_OPT_LIST with {cur.length} bytes of data {where} was served",
                      check="list-data-not-rejected")
        if option == Opt.STRUCTURED_REPLY and data and rep == Rep.ACK:
            self.flag(session, event, f"NBD_OPT_STRUCTURED_REPLY with {cur.length} bytes of data {where} was "
                      "acknowledged", check="structured-reply-data-not-rejected")
        if option in (Opt.SET_META_CONTEXT, Opt.LIST_META_CONTEXT) and cur.problem and rep == Rep.ACK \
                and cur.length <= OPTION_KEEP:
            self.flag(session, event, f"malformed {name} {where} acknowledged", check="meta-request-not-rejected")
        elif option == Opt.SET_META_CONTEXT and rep == Rep.ACK and not st.structured and session.saw_start \
                and not session.lost_sync:
            self.flag(session, event, f"NBD_OPT_SET_META_CONTEXT before structured replies {where} was "
                      "acknowledged", check="set-meta-context-not-rejected")
        if option == Opt.LIST_META_CONTEXT and rep == Rep.ERR_TOO_BIG and not cur.queries and not cur.problem \
                and cur.lost is None:
            self.flag(session, event, "NBD_OPT_LIST_META_CONTEXT with no queries answered NBD_REP_ERR_TOO_BIG",
                      check="too-big-for-no-queries")
        if option in (Opt.INFO, Opt.GO):
            self._info_final(session, st, event, cur, name)

    @staticmethod
    def _remember(st: _State, event: ev.OptionReply, option: int) -> None:
        """What a final reply changes for the options that follow."""
        rep = event.reply
        if rep == Rep.ERR_SHUTDOWN:
            st.shutdown = event.frame
        if rep == Rep.ERR_UNSUP and option == Opt.GO:
            st.go_unsup = event.frame
        if rep == Rep.ACK and option in (Opt.STRUCTURED_REPLY, Opt.EXTENDED_HEADERS):
            st.structured = True
            if option == Opt.STRUCTURED_REPLY:
                st.structured_frame = event.frame

    def _info_final(self, session: Session, st: _State, event: ev.OptionReply, cur: ev.OptionRequest,
                    name: str) -> None:
        rep = event.reply
        if session.lost_sync or st.cut:
            return  # replies of this answer (or what they say) may be among the lost bytes
        if rep == Rep.ACK:
            pad = event.end - event.start - OPTION_REPLY_HEADER - event.length
            if pad > 0 and cur.option == Opt.GO:
                self.flag(session, event, f"{pad} zero bytes of padding after the NBD_REP_ACK that ends NBD_OPT_GO",
                          check="padding-after-go", nbytes=pad)
            if Info.EXPORT not in st.info:
                self.flag(session, event, f"{name} acknowledged without an NBD_INFO_EXPORT reply before it",
                          check="go-without-export-info")
            if cur.option == Opt.INFO and st.request is not None:
                st.info_answer = (st.request, st.info)
            if cur.option == Opt.GO and st.compare_with is not None:
                self._same_answer(session, event, st.compare_with, st.info)
        elif rep == Rep.ERR_UNKNOWN and st.info_frames:
            self.flag(session, event, f"{name} failed with NBD_REP_ERR_UNKNOWN after {len(st.info_frames)} "
                      "NBD_REP_INFO", check="info-before-unknown")
        elif rep == Rep.ERR_BLOCK_SIZE_REQD:
            if Info.BLOCK_SIZE in cur.info_requests:
                self.flag(session, event, f"{name} failed with NBD_REP_ERR_BLOCK_SIZE_REQD although it requested "
                          "NBD_INFO_BLOCK_SIZE", check="block-size-reqd-despite-request")
            elif Info.BLOCK_SIZE not in st.info:
                self.flag(session, event, "NBD_REP_ERR_BLOCK_SIZE_REQD with no NBD_INFO_BLOCK_SIZE before it",
                          check="block-size-reqd-without-info")

    def _same_answer(self, session: Session, event: ev.OptionReply, info: dict[int, InfoValues],
                     go: dict[int, InfoValues]) -> None:
        """A GO right after an INFO with the same parameters must get the same information (in any order)."""
        for itype, diffs in info_answers.differences(info, go):
            self.flag(session, event, f"NBD_OPT_GO answered differently from the NBD_OPT_INFO just before it with "
                      f"the same parameters ({INFO_TYPES.name(itype)}: {diffs})", check="go-differs-from-info",
                      info_type=itype)

