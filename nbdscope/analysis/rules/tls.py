"""TLS rules: NBD_OPT_STARTTLS, the TLS modes of the spec's TLS section, and downgrades.

Everything after an acknowledged STARTTLS is encrypted, so what is judged here is the plaintext around
it: how the server answers STARTTLS and other options before TLS, whether its answers fit one TLS mode
(NOTLS, FORCEDTLS, SELECTIVETLS) for the whole connection, and whether both sides really switch to TLS
after the acknowledgement. A server's mode is never announced; it is inferred from what it says:
refusing a plain STARTTLS means NOTLS, NBD_REP_ERR_TLS_REQD to an option other than INFO/GO/EXPORT_NAME
means FORCEDTLS, TLS_REQD to INFO/GO for one export means that export is TLS-only (SELECTIVETLS)."""

from __future__ import annotations

from dataclasses import dataclass, field

from nbdscope.analysis.anomaly import Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import OPTION_REPLIES as REPLIES
from nbdscope.spec import OPTIONS, ClientFlag, HandshakeFlag, Opt, Rep
from nbdscope.spec.codes import is_rep_error

_EXPORT_OPTIONS = frozenset({int(Opt.INFO), int(Opt.GO), int(Opt.EXPORT_NAME)})  # SELECTIVETLS may refuse these
_EXEMPT = frozenset({int(Opt.STARTTLS), int(Opt.ABORT)})  # FORCEDTLS answers these normally
_NOTLS_REFUSALS = frozenset({int(Rep.ERR_UNSUP), int(Rep.ERR_POLICY), int(Rep.ERR_PLATFORM)})  # "no TLS here"
_STATEFUL = frozenset({int(Opt.STRUCTURED_REPLY), int(Opt.SET_META_CONTEXT), int(Opt.EXTENDED_HEADERS)})
_TLS_1_2 = 0x0303


@dataclass
class _State:
    """What one connection showed about TLS so far."""

    fixed_server: bool | None = None
    fixed_client: bool | None = None
    pending: list[ev.OptionRequest] = field(default_factory=list)  # options awaiting their final reply
    starttls: ev.OptionRequest | None = None  # the STARTTLS awaiting its reply
    after_starttls: list[ev.OptionRequest] = field(default_factory=list)  # options sent behind it
    acked: ev.OptionReply | None = None  # the ACK that began TLS
    refused: ev.OptionReply | None = None  # a plain STARTTLS refused the NOTLS way
    required: ev.OptionReply | None = None  # the first TLS_REQD
    forced: ev.OptionReply | None = None  # the first TLS_REQD to an option other than INFO/GO/EXPORT_NAME
    answered: ev.OptionReply | None = None  # the first plaintext answer that was not TLS_REQD (not STARTTLS/ABORT)
    tls_only: dict[str, int] = field(default_factory=dict)  # export -> frame of its TLS_REQD to INFO/GO
    stateful: ev.OptionRequest | None = None  # the first stateful option sent before any STARTTLS
    go_tried: bool = False
    inconsistent: bool = False  # one mode contradiction per connection is enough


def _check(name: str, requires: tuple[str, ...], summary: str, consequence: str, fix: str, example: str,
           **kw: object) -> Check:
    return Check(name, requires, summary, consequence=consequence, fix=fix, example=example, **kw)  # type: ignore[arg-type]


class TlsProtocol(Rule):
    INFO = RuleInfo("tls-protocol", "error", "either", "TLS support; Protocol downgrade attacks",
                    "TLS misuse: STARTTLS and its reply, plaintext where TLS was due, TLS where plaintext was "
                    "due, and server answers that fit no single TLS mode (a downgrade)")
    CHECKS = (
        _check("tls-before-ack", (), "TLS records where a plaintext NBD message was due (no STARTTLS acknowledged)",
               "the peer is out of step: the other side reads TLS records as NBD and must hang up",
               "start TLS only after NBD_REP_ACK to NBD_OPT_STARTTLS",
               "TLS record where a plaintext option was due: STARTTLS was not acknowledged", severity="error"),
        _check("tls-after-refusal", ("tls-client.5",), "client began TLS although the server refused STARTTLS",
               "the server expects plaintext options and cannot parse the TLS handshake",
               "client: on an error reply to STARTTLS carry on in plaintext or hang up",
               "client sent TLS records after STARTTLS was refused with NBD_REP_ERR_POLICY in frame 8"),
        _check("client-plaintext-after-ack", ("tls-client.4",), "client sent plaintext NBD after STARTTLS was "
               "acknowledged (or pipelined options behind STARTTLS)",
               "the server awaits a TLS handshake; the plaintext bytes break it or travel unprotected",
               "client: start the TLS handshake right after NBD_REP_ACK; send nothing behind STARTTLS",
               "client sent an NBD option (IHAVEOPT) after STARTTLS was acknowledged in frame 10"),
        _check("starttls-twice", ("tls-client.3",), "client sent a second STARTTLS behind the one that was "
               "acknowledged", "the second STARTTLS arrives where TLS records are due",
               "client: send NBD_OPT_STARTTLS once and wait for its reply",
               "second NBD_OPT_STARTTLS (frame 9) sent behind the one acknowledged in frame 10"),
        _check("server-plaintext-after-ack", ("forcedtls.3", "forcedtls.4"), "server sent plaintext NBD after "
               "acknowledging STARTTLS", "the client's TLS handshake fails, or option replies travel unprotected",
               "server: after NBD_REP_ACK to STARTTLS speak only TLS",
               "server sent an NBD option reply after acknowledging STARTTLS in frame 10"),
        _check("starttls-reply", ("opt-starttls.2", "notls.1"), "STARTTLS answered with neither NBD_REP_ACK nor "
               "an error", "the client cannot tell whether TLS begins", "server: answer STARTTLS with ACK or an error",
               "NBD_OPT_STARTTLS answered with NBD_REP_SERVER"),
        _check("starttls-data", ("opt-starttls.1",), "client sent data with NBD_OPT_STARTTLS",
               "the server may refuse the upgrade with NBD_REP_ERR_INVALID", "client: send STARTTLS with length 0",
               "NBD_OPT_STARTTLS carries 4 bytes of data"),
        _check("starttls-without-fixed-newstyle", ("tls-client.2",), "client sent STARTTLS without fixed newstyle "
               "on both sides", "a server without fixed newstyle cannot answer options at all",
               "client: send STARTTLS only after NBD_FLAG_FIXED_NEWSTYLE and NBD_FLAG_C_FIXED_NEWSTYLE",
               "NBD_OPT_STARTTLS although the client flags lack NBD_FLAG_C_FIXED_NEWSTYLE"),
        _check("tls-without-fixed-newstyle", ("tls-server.4",), "server acknowledged STARTTLS or required TLS "
               "without fixed newstyle on both sides", "such a client cannot follow the upgrade",
               "server: stay in NOTLS mode unless both fixed-newstyle flags were exchanged",
               "server answered NBD_REP_ERR_TLS_REQD although the client flags lack NBD_FLAG_C_FIXED_NEWSTYLE"),
        _check("tls-reqd-from-notls", ("notls.2", "tls-server.2"), "server required TLS after refusing STARTTLS "
               "(NOTLS mode)", "the client can never satisfy the server: TLS is demanded and refused",
               "server: keep one TLS mode per connection",
               "NBD_REP_ERR_TLS_REQD to NBD_OPT_GO although STARTTLS was refused (NOTLS) in frame 8"),
        _check("starttls-refused", ("forcedtls.1", "selectivetls.1", "tls-server.2"), "server refused STARTTLS "
               "after requiring TLS", "the client can never satisfy the server: TLS is demanded and refused",
               "server: in FORCEDTLS and SELECTIVETLS mode acknowledge STARTTLS",
               "NBD_OPT_STARTTLS refused with NBD_REP_ERR_POLICY although the server required TLS in frame 12"),
        _check("forced-answered", ("forcedtls.6", "selectivetls.6", "tls-server.2"), "server answered a "
               "plaintext option other than STARTTLS/ABORT normally and also required TLS for such an option",
               "the connection fits no TLS mode; FORCEDTLS servers must leak nothing before TLS",
               "server: in FORCEDTLS mode answer every option but STARTTLS and ABORT with NBD_REP_ERR_TLS_REQD",
               "NBD_OPT_LIST answered with NBD_REP_SERVER although NBD_OPT_STRUCTURED_REPLY got TLS_REQD in frame 8"),
        _check("forced-go-answered", ("forcedtls.8", "tls-server.2"), "FORCEDTLS server answered a plaintext "
               "NBD_OPT_GO with anything but NBD_REP_ERR_TLS_REQD", "the export is served without TLS: a downgrade",
               "server: refuse GO with NBD_REP_ERR_TLS_REQD until TLS is up",
               "NBD_OPT_GO answered with NBD_REP_ACK in plaintext although TLS was required in frame 8"),
        _check("forced-export-name-served", ("forcedtls.7", "tls-server.2"), "FORCEDTLS server entered "
               "transmission on a plaintext NBD_OPT_EXPORT_NAME", "the export is served without TLS: a downgrade",
               "server: hang up on NBD_OPT_EXPORT_NAME before TLS",
               "plaintext NBD_OPT_EXPORT_NAME served although TLS was required in frame 8"),
        _check("tls-only-go-served", ("selectivetls.3", "tls-server.2"), "server served an export in plaintext "
               "through NBD_OPT_GO after answering TLS_REQD for that same export",
               "a TLS-only export is served without TLS: a downgrade",
               "server: refuse GO for TLS-only exports with NBD_REP_ERR_TLS_REQD until TLS is up",
               "export 'secret' served in plaintext by NBD_OPT_GO although it drew TLS_REQD in frame 8"),
        _check("tls-only-export-name-served", ("selectivetls.4", "tls-server.2"), "server served an export in "
               "plaintext through NBD_OPT_EXPORT_NAME after answering TLS_REQD for that same export",
               "a TLS-only export is served without TLS: a downgrade",
               "server: hang up on NBD_OPT_EXPORT_NAME for a TLS-only export before TLS",
               "export 'secret' served in plaintext by NBD_OPT_EXPORT_NAME although it drew TLS_REQD in frame 8"),
        _check("stateful-before-starttls", ("opt-starttls.4",), "client sent stateful options before STARTTLS",
               "the state is lost on the upgrade (the server must drop it) and was negotiated unprotected",
               "client: send STARTTLS first, then structured replies, meta contexts, extended headers",
               "NBD_OPT_STRUCTURED_REPLY (frame 6) sent before NBD_OPT_STARTTLS"),
        _check("export-name-with-tls-client", ("tls-client.9",), "a TLS-capable client entered transmission "
               "with NBD_OPT_EXPORT_NAME without trying NBD_OPT_GO",
               "the server cannot tell the client why it refuses (TLS required), and NO_ZEROES can be tampered with",
               "client: use NBD_OPT_GO when it offers STARTTLS",
               "NBD_OPT_EXPORT_NAME used by a client that sent NBD_OPT_STARTTLS in frame 8"),
        _check("starttls-inside-tls-reply", ("forcedtls.2", "selectivetls.2"), "server answered a STARTTLS "
               "sent inside TLS with something other than NBD_REP_ERR_INVALID (seen with a key log)",
               "a client may try to start TLS inside TLS, or read the answer as a mode it is not",
               "server: once TLS is up, answer NBD_OPT_STARTTLS with NBD_REP_ERR_INVALID",
               "NBD_OPT_STARTTLS inside TLS answered with NBD_REP_ACK, not NBD_REP_ERR_INVALID", blame="server"),
        _check("tls-reqd-inside-tls", ("forcedtls.9", "selectivetls.5"), "server answered NBD_REP_ERR_TLS_REQD "
               "inside TLS (seen with a key log)", "the client can never satisfy the server: TLS is already up",
               "server: once TLS is up, never answer NBD_REP_ERR_TLS_REQD",
               "NBD_REP_ERR_TLS_REQD to NBD_OPT_GO although TLS is up since frame 10", blame="server"),
        _check("old-tls-version", ("tls-versions.5",), "the server chose a TLS version older than 1.2",
               "older TLS versions have known attacks", "server: offer TLS 1.2 or later only (GnuTLS/OpenSSL "
               "priority strings)", "ServerHello selects TLS version 0x0301, older than TLS 1.2"),
    )
    EVENTS = (ev.ServerGreeting, ev.ClientFlags, ev.OptionRequest, ev.OptionReply, ev.TlsData,
              ev.TransmissionStart, ev.Malformed, ev.ConnectionEnd)

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, _State] = {}

    def message(self, session: Session, event: ev.Event) -> None:
        st = self.state.get(session.id)
        if st is None:
            st = self.state[session.id] = _State()
        if isinstance(event, ev.ServerGreeting):
            st.fixed_server = bool((event.handshake_flags or 0) & HandshakeFlag.FIXED_NEWSTYLE)
        elif isinstance(event, ev.ClientFlags):
            st.fixed_client = bool(event.flags & ClientFlag.C_FIXED_NEWSTYLE)
        elif isinstance(event, ev.OptionRequest):
            self._request(session, st, event)
        elif isinstance(event, ev.OptionReply):
            self._reply(session, st, event)
        elif isinstance(event, ev.TlsData):
            self._encrypted(session, st, event)
        elif isinstance(event, ev.TransmissionStart):
            self._transmission(session, st, event)
        elif isinstance(event, ev.Malformed) and event.what == "tls-without-starttls":
            if event.dir == "c2s" and st.refused is not None:
                self.flag(session, event, f"client sent TLS records after STARTTLS was refused with "
                          f"{REPLIES.name(st.refused.reply)} in frame {st.refused.frame}", check="tls-after-refusal")
            else:
                self.flag(session, event, f"{event.message}: STARTTLS was not acknowledged, so this stream cannot "
                          "be decoded and the peer is out of step", check="tls-before-ack")
        elif isinstance(event, ev.ConnectionEnd):
            self.state.pop(session.id, None)

    # ------------------------------------------------------------ client

    def _request(self, session: Session, st: _State, event: ev.OptionRequest) -> None:
        st.pending.append(event)
        if session.tls:  # decrypted with a key log: the haggling inside TLS
            if event.option == Opt.STARTTLS:
                acked = f" in frame {st.acked.frame}" if st.acked is not None else ""
                self.flag(session, event, f"NBD_OPT_STARTTLS sent inside TLS (TLS began{acked})",
                          check="starttls-twice")
            return
        if st.starttls is not None:
            st.after_starttls.append(event)
        option = event.option
        if option in _STATEFUL and st.stateful is None and st.starttls is None:
            st.stateful = event
        if option in (Opt.GO, Opt.INFO):
            st.go_tried = True
        if option != Opt.STARTTLS:
            return
        if st.starttls is None:
            st.starttls = event
        if event.length:
            self.flag(session, event, f"NBD_OPT_STARTTLS carries {event.length} bytes of data (it must carry none)",
                      check="starttls-data", length=event.length)
        if st.fixed_server is False or st.fixed_client is False:
            side = "server greeting" if st.fixed_server is False else "client flags"
            self.flag(session, event, f"NBD_OPT_STARTTLS although the {side} lack fixed newstyle",
                      check="starttls-without-fixed-newstyle")
        if st.stateful is not None and st.starttls is event:
            self.flag(session, event, f"{OPTIONS.name(st.stateful.option)} (frame {st.stateful.frame}) sent before "
                      "NBD_OPT_STARTTLS: its state is dropped by the upgrade", check="stateful-before-starttls",
                      option=OPTIONS.name(st.stateful.option))

    # ------------------------------------------------------------ server

    def _reply(self, session: Session, st: _State, event: ev.OptionReply) -> None:
        request = next((o for o in st.pending if o.option == event.option), None)
        final = event.reply == Rep.ACK or is_rep_error(event.reply)
        if request is not None and final:
            st.pending.remove(request)
        if not event.solicited:
            return  # answered before the option arrived, or to nothing: the handshake rules say so
        if session.tls:
            self._inside(session, st, event)
        elif event.option == Opt.STARTTLS:
            self._starttls_reply(session, st, event, request)
        elif event.reply == Rep.ERR_TLS_REQD:
            self._tls_required(session, st, event, request)
        elif event.option not in _EXEMPT and event.reply != Rep.ERR_SHUTDOWN and not session.tls:
            self._answered(session, st, event)

    def _inside(self, session: Session, st: _State, event: ev.OptionReply) -> None:
        """An option reply inside TLS (decrypted with a key log)."""
        since = f" since frame {st.acked.frame}" if st.acked is not None else ""
        if event.reply == Rep.ERR_TLS_REQD:
            self.flag(session, event, f"NBD_REP_ERR_TLS_REQD to {OPTIONS.name(event.option)} although TLS is up"
                      f"{since}", check="tls-reqd-inside-tls", blame="server")
        elif event.option == Opt.STARTTLS and event.reply != Rep.ERR_INVALID and (event.reply == Rep.ACK
                                                                                 or is_rep_error(event.reply)):
            self.flag(session, event, f"NBD_OPT_STARTTLS inside TLS answered with {REPLIES.name(event.reply)}, "
                      "not NBD_REP_ERR_INVALID", check="starttls-inside-tls-reply", blame="server",
                      reply=REPLIES.name(event.reply))

    def _starttls_reply(self, session: Session, st: _State, event: ev.OptionReply,
                        request: ev.OptionRequest | None) -> None:
        if request is st.starttls:
            st.starttls = None
            behind, st.after_starttls = st.after_starttls, []
        else:
            behind = []
        if event.reply == Rep.ACK:
            st.acked = event
            if not (st.fixed_server and st.fixed_client) and st.fixed_server is not None:
                self.flag(session, event, "STARTTLS acknowledged without fixed newstyle on both sides",
                          check="tls-without-fixed-newstyle", blame="server")
            for other in behind:
                check = "starttls-twice" if other.option == Opt.STARTTLS else "client-plaintext-after-ack"
                self.flag(session, other, f"{OPTIONS.name(other.option)} (frame {other.frame}) sent in plaintext "
                          f"behind the STARTTLS acknowledged in frame {event.frame}", check=check, blame="client")
            return
        if not is_rep_error(event.reply):
            self.flag(session, event, f"NBD_OPT_STARTTLS answered with {REPLIES.name(event.reply)}, which is "
                      "neither NBD_REP_ACK nor an error", check="starttls-reply", reply=REPLIES.name(event.reply))
            return
        if event.reply not in _NOTLS_REFUSALS or (request is not None and request.length):
            return  # an error every mode may give (bad data, shutdown): it says nothing of the mode
        if st.refused is None:
            st.refused = event
        if st.required is not None and not st.inconsistent:
            st.inconsistent = True
            self.flag(session, event, f"NBD_OPT_STARTTLS refused with {REPLIES.name(event.reply)} although the "
                      f"server required TLS in frame {st.required.frame}", check="starttls-refused",
                      required_frame=st.required.frame)

    def _tls_required(self, session: Session, st: _State, event: ev.OptionReply,
                      request: ev.OptionRequest | None) -> None:
        if st.fixed_server is not None and not (st.fixed_server and st.fixed_client):
            self.flag(session, event, f"NBD_REP_ERR_TLS_REQD to {OPTIONS.name(event.option)} without fixed newstyle "
                      "on both sides", check="tls-without-fixed-newstyle", blame="server")
        if st.required is None:
            st.required = event
        if st.refused is not None and not st.inconsistent:
            st.inconsistent = True
            self.flag(session, event, f"NBD_REP_ERR_TLS_REQD to {OPTIONS.name(event.option)} although STARTTLS was "
                      f"refused (NOTLS) in frame {st.refused.frame}", check="tls-reqd-from-notls",
                      refused_frame=st.refused.frame)
            return
        if event.option in _EXPORT_OPTIONS:
            if request is not None and request.export_name is not None:
                st.tls_only.setdefault(request.export_name, event.frame)
            return
        if st.forced is None:
            st.forced = event
        if st.answered is not None and not st.inconsistent:
            st.inconsistent = True
            a = st.answered
            self.flag(session, event, f"NBD_REP_ERR_TLS_REQD to {OPTIONS.name(event.option)} (FORCEDTLS) although "
                      f"{OPTIONS.name(a.option)} was answered with {REPLIES.name(a.reply)} in frame {a.frame}",
                      check="forced-answered", blame="server", answered_frame=a.frame)

    def _answered(self, session: Session, st: _State, event: ev.OptionReply) -> None:
        if st.answered is None:
            st.answered = event
        forced = st.forced
        if forced is None or st.inconsistent:
            return
        st.inconsistent = True
        check = "forced-go-answered" if event.option == Opt.GO else "forced-answered"
        self.flag(session, event, f"{OPTIONS.name(event.option)} answered with {REPLIES.name(event.reply)} in "
                  f"plaintext although {OPTIONS.name(forced.option)} got NBD_REP_ERR_TLS_REQD (FORCEDTLS) in frame "
                  f"{forced.frame}", check=check, blame="server", required_frame=forced.frame)

    def _transmission(self, session: Session, st: _State, event: ev.TransmissionStart) -> None:
        if session.tls or event.how not in ("go", "export-name"):
            return
        if event.how == "export-name" and st.acked is None and (st.refused or st.starttls) and not st.go_tried:
            self.flag(session, event, "NBD_OPT_EXPORT_NAME used by a client that sent NBD_OPT_STARTTLS, without "
                      "trying NBD_OPT_GO", check="export-name-with-tls-client", blame="client")
        if st.inconsistent:
            return
        if st.forced is not None and event.how == "export-name":
            self.flag(session, event, f"plaintext NBD_OPT_EXPORT_NAME served although "
                      f"{OPTIONS.name(st.forced.option)} got NBD_REP_ERR_TLS_REQD (FORCEDTLS) in frame "
                      f"{st.forced.frame}", check="forced-export-name-served", blame="server")
            return
        frame = st.tls_only.get(event.export_name or "")
        if frame is not None and st.forced is None:
            check = "tls-only-go-served" if event.how == "go" else "tls-only-export-name-served"
            via = "NBD_OPT_GO" if event.how == "go" else "NBD_OPT_EXPORT_NAME"
            self.flag(session, event, f"export {event.export_name!r} served in plaintext by {via} although it drew "
                      f"NBD_REP_ERR_TLS_REQD in frame {frame}", check=check, blame="server",
                      export=event.export_name)

    def _encrypted(self, session: Session, st: _State, event: ev.TlsData) -> None:
        if event.plaintext is not None:
            who, check = ("client", "client-plaintext-after-ack") if event.dir == "c2s" else \
                ("server", "server-plaintext-after-ack")
            acked = f" in frame {st.acked.frame}" if st.acked is not None else ""
            self.flag(session, event, f"{who} sent {event.plaintext} after STARTTLS was acknowledged{acked}, where "
                      "a TLS record was due", check=check, blame=who)  # type: ignore[arg-type]
        elif event.hello_version is not None and event.dir == "s2c" and event.hello_version < _TLS_1_2:
            self.flag(session, event, f"ServerHello selects TLS version {event.hello_version:#06x}, older than "
                      "TLS 1.2", check="old-tls-version", blame="server", version=event.hello_version)
