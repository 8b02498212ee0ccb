"""Rules on what the client sends in transmission (spec "Terminating the transmission phase",
NBD_CMD_DISC, NBD_CMD_READ): requests after NBD_CMD_DISC or after the server said it is shutting
down, disconnecting with requests in flight, empty reads."""

from __future__ import annotations

from dataclasses import dataclass

from nbdscope.analysis.anomaly import Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS, Cmd, Errno

_DISC, _READ, _ESHUTDOWN = int(Cmd.DISC), int(Cmd.READ), int(Errno.ESHUTDOWN)


@dataclass
class _State:
    disc_frame: int | None = None
    shutdown_frame: int | None = None  # the first reply that said NBD_ESHUTDOWN
    reported: bool = False  # one finding per session for requests that should not have come


class DisconnectProtocol(Rule):
    INFO = RuleInfo("disconnect-protocol", "error", "client", "Terminating the transmission phase",
                    "the client goes on sending after NBD_CMD_DISC or after NBD_ESHUTDOWN, or disconnects "
                    "with requests still in flight")
    CHECKS = (
        Check("request-after-disc", ("cmd-disc.2",), "a request sent after NBD_CMD_DISC",
              consequence="the server is closing and never answers it; the client waits or loses the request",
              fix="client: send NBD_CMD_DISC last, after every reply it wants has arrived",
              example="NBD_CMD_READ cookie 0x5 sent after NBD_CMD_DISC in frame 30"),
        Check("request-after-shutdown", ("transmission-end.5",),
              "a new request (not NBD_CMD_DISC) after the server answered NBD_ESHUTDOWN",
              consequence="the server is going away; further requests fail or are lost, and the clean "
                          "disconnect the server expects does not come",
              fix="client: on NBD_ESHUTDOWN stop issuing requests and send NBD_CMD_DISC",
              example="NBD_CMD_WRITE cookie 0x9 sent after the server answered NBD_ESHUTDOWN in frame 41"),
        Check("disc-in-flight", ("transmission-end.6",), "NBD_CMD_DISC sent while requests are unanswered",
              consequence="the server may close before answering; the client may lose those replies",
              fix="client: wait for every reply before NBD_CMD_DISC (libnbd: nbd_shutdown without "
                  "LIBNBD_SHUTDOWN_ABANDON_PENDING)",
              example="NBD_CMD_DISC sent with 2 request(s) unanswered (first: NBD_CMD_READ cookie 0x4, frame 20)"),
    )
    EVENTS = (ev.Request, ev.SimpleReply, ev.ReplyChunk, ev.ConnectionEnd)

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, _State] = {}

    def settled(self, session: Session) -> bool:
        """Whether a request without flags and a reply without error would pass unremarked here (no
        NBD_CMD_DISC or NBD_ESHUTDOWN seen): the compiled path asks before it takes a connection over."""
        st = self.state.get(session.id)
        return st is None or (st.disc_frame is None and st.shutdown_frame is None)

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.ConnectionEnd):
            self.state.pop(session.id, None)
            return
        st = self.state.get(session.id)
        if isinstance(event, ev.Reply):
            if getattr(event, "error", None) == _ESHUTDOWN:
                if st is None:
                    st = self.state[session.id] = _State()
                if st.shutdown_frame is None:
                    st.shutdown_frame = event.frame
            return
        assert isinstance(event, ev.Request)
        if st is None:
            st = self.state[session.id] = _State()
        if st.disc_frame is not None:
            if not st.reported:
                st.reported = True
                self.flag(session, event, f"{COMMANDS.name(event.command)} cookie {event.cookie:#x} sent after "
                          f"NBD_CMD_DISC in frame {st.disc_frame}", check="request-after-disc", cookie=event.cookie,
                          disc_frame=st.disc_frame)
            return
        if event.command == _DISC:
            st.disc_frame = event.frame
            pending = session.in_flight
            if pending and session.reliable:
                first = min(pending.values(), key=lambda f: f.request.frame).request
                self.flag(session, event, f"NBD_CMD_DISC sent with {len(pending)} request(s) unanswered (first: "
                          f"{COMMANDS.name(first.command)} cookie {first.cookie:#x}, frame {first.frame})",
                          check="disc-in-flight", in_flight=len(pending))
            return
        if st.shutdown_frame is not None and not st.reported:
            st.reported = True
            self.flag(session, event, f"{COMMANDS.name(event.command)} cookie {event.cookie:#x} sent after the "
                      f"server answered NBD_ESHUTDOWN in frame {st.shutdown_frame}", check="request-after-shutdown",
                      cookie=event.cookie, shutdown_frame=st.shutdown_frame)


class ReadRequest(Rule):
    INFO = RuleInfo("read-request", "warning", "client", "Request types",
                    "a read request the spec advises against (length 0)")
    CHECKS = (
        Check("zero-length", ("cmd-read.2",), "NBD_CMD_READ with length 0",
              consequence="what the server does is unspecified; some servers fail it, a few mishandle it",
              fix="client: skip empty reads",
              example="NBD_CMD_READ cookie 0x1 at offset 4096 with length 0"),
    )
    EVENTS = (ev.Request,)
    FOR_COMMANDS = frozenset({_READ})

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.Request) and event.command == _READ and event.length == 0:
            self.flag(session, event, f"NBD_CMD_READ cookie {event.cookie:#x} at offset {event.offset} with "
                      "length 0", check="zero-length", cookie=event.cookie)
