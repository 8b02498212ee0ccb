"""Servers that refuse what they advertised, and the write-zeroes error values the spec fixes
(spec "Transmission flags", "Command flags", NBD_CMD_WRITE_ZEROES)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from nbdscope.analysis.anomaly import Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.rules.outcomes import ReplyErrors, blameless
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev
from nbdscope.spec import COMMANDS, ERRORS, Cmd, CommandFlag, Errno, TransmissionFlag

TF = TransmissionFlag
_EINVAL, _ENOTSUP, _EOVERFLOW = int(Errno.EINVAL), int(Errno.ENOTSUP), int(Errno.EOVERFLOW)
_REFUSALS = frozenset({_EINVAL, _ENOTSUP})  # "I do not do that", as opposed to a failure doing it
_FUA, _NO_HOLE, _FAST_ZERO = int(CommandFlag.FUA), int(CommandFlag.NO_HOLE), int(CommandFlag.FAST_ZERO)
# features whose every use may be refused only by a server that should not have advertised them.
# NBD_CMD_CACHE is left out on purpose: a server may advertise it and still always fail it.
_FEATURES: dict[int, TF] = {Cmd.FLUSH: TF.SEND_FLUSH, Cmd.TRIM: TF.SEND_TRIM, Cmd.WRITE_ZEROES: TF.SEND_WRITE_ZEROES}


@dataclass
class _Tally:
    refused: Counter[str] = field(default_factory=Counter)  # feature or "FUA on <command>" -> refusals
    accepted: Counter[str] = field(default_factory=Counter)
    first: dict[str, tuple[int, float, int]] = field(default_factory=dict)  # key -> (frame, time, error)
    wrong_fast_zero: list[tuple[int, float, int, int]] = field(default_factory=list)  # frame, time, cookie, error

    def add(self, key: str, reply: ev.Reply, error: int) -> None:
        if error in _REFUSALS:
            self.refused[key] += 1
            self.first.setdefault(key, (reply.frame, reply.time, error))
        elif not error:
            self.accepted[key] += 1


class AdvertisedRefused(Rule):
    INFO = RuleInfo("advertised-refused", "error", "server", "Transmission flags; Command flags",
                    "a server that advertised FLUSH, TRIM, WRITE_ZEROES, FUA or NO_HOLE and then refused every "
                    "such request with NBD_EINVAL or NBD_ENOTSUP (judged at the end of each session)")
    CHECKS = (
        Check("unsupported-feature", ("tflags.1",), "every FLUSH, TRIM or WRITE_ZEROES of a session was refused "
              "though its transmission flag was set",
              consequence="clients trust the flag: a refused FLUSH means data the client believes durable may not "
                          "be, a refused TRIM or WRITE_ZEROES fails a copy or a discard that should have worked",
              fix="server: advertise only what it implements (nbdkit 1.32 with --oldstyle advertises every "
                  "feature of the plugin and then refuses them all with EINVAL; newer nbdkit or newstyle "
                  "negotiation does not)",
              example="NBD_FLAG_SEND_FLUSH was advertised, yet all 3 NBD_CMD_FLUSH requests were refused "
                      "(first: frame 12, NBD_EINVAL)"),
        Check("fua-refused", ("cmdflags.2",), "requests with NBD_CMD_FLAG_FUA refused under SEND_FUA while the "
              "same command without FUA succeeded",
              consequence="a client asking for durable writes gets I/O errors instead; some clients (the Linux "
                          "kernel) set FUA on commands that write nothing too",
              fix="server: accept FUA on every command once SEND_FUA is advertised (ignore it where nothing is "
                  "written)",
              example="NBD_FLAG_SEND_FUA was advertised, yet all 2 NBD_CMD_WRITE requests with FUA were refused "
                      "while NBD_CMD_WRITE without FUA succeeded (first: frame 9, NBD_EINVAL)"),
        Check("no-hole-refused", ("cmdflags.6",), "WRITE_ZEROES with NO_HOLE refused while plain WRITE_ZEROES "
              "succeeded", consequence="a client that needs the area allocated (a preallocated image) fails",
              fix="server: support NBD_CMD_FLAG_NO_HOLE whenever SEND_WRITE_ZEROES is set (write real zeroes)",
              example="NBD_FLAG_SEND_WRITE_ZEROES was advertised, yet all 1 NBD_CMD_WRITE_ZEROES requests with "
                      "NO_HOLE were refused while plain ones succeeded (first: frame 14, NBD_EINVAL)"),
        Check("fast-zero-wrong-error", ("cmdflags.10", "cmd-write-zeroes.10"), "a fast-zero request the server "
              "advertised failed with NBD_EINVAL instead of NBD_ENOTSUP",
              consequence="only NBD_ENOTSUP tells the client to fall back to writing zeroes; EINVAL reads as a "
                          "hard failure and aborts the copy",
              fix="server: answer a fast-zero request it cannot do fast with NBD_ENOTSUP",
              example="NBD_CMD_WRITE_ZEROES with FAST_ZERO (cookie 0x4) failed with NBD_EINVAL (22) under "
                      "NBD_FLAG_SEND_FAST_ZERO; a slow zero must fail with NBD_ENOTSUP"),
    )
    EVENTS = (ev.SimpleReply, ev.ReplyChunk)
    # the commands a feature flag or FUA concerns (reads are neither: not called for them)
    FOR_COMMANDS = frozenset({Cmd.WRITE, Cmd.FLUSH, Cmd.TRIM, Cmd.WRITE_ZEROES})

    def __init__(self) -> None:
        super().__init__()
        self._errors = ReplyErrors()
        self._tally: dict[str, _Tally] = {}

    def message(self, session: Session, event: ev.Event) -> None:
        if not isinstance(event, ev.SimpleReply | ev.ReplyChunk) or session.transmission_flags is None:
            return
        error = self._errors.completed(session, event)
        if error is None or not blameless(session, event):
            return
        cmd, flags = event.command, event.request_flags or 0
        tally = self._tally.setdefault(session.id, _Tally())
        name = COMMANDS.name(cmd) if cmd is not None else "?"
        if cmd in _FEATURES and session.has_flag(_FEATURES[cmd]) and not flags & _FAST_ZERO \
                and not (cmd != Cmd.FLUSH and session.has_flag(TF.READ_ONLY)):
            tally.add(name, event, error)
        if session.has_flag(TF.SEND_FUA):
            tally.add(f"{name}+FUA" if flags & _FUA else f"{name}-FUA", event, error)
        if cmd == Cmd.WRITE_ZEROES and session.has_flag(TF.SEND_WRITE_ZEROES) and not flags & _FAST_ZERO:
            tally.add("NO_HOLE" if flags & _NO_HOLE else "plain", event, error)
        if cmd == Cmd.WRITE_ZEROES and flags & _FAST_ZERO and error == _EINVAL:
            tally.wrong_fast_zero.append((event.frame, event.time, event.cookie, error))

    def quiet_replies(self, session: Session, command: int, n: int) -> None:
        """``message`` for ``n`` successful replies to requests of this command without flags that a correct
        server had no reason to refuse (``blameless``): the compiled path counts them for it."""
        if session.transmission_flags is None or session.lost_sync:
            return
        tally = self._tally.setdefault(session.id, _Tally())
        if session.has_flag(TF.SEND_FUA):
            tally.accepted[f"{COMMANDS.name(command)}-FUA"] += n

    def ending(self, sessions: list[Session]) -> None:
        for session in sessions:
            tally = self._tally.get(session.id)
            if tally is None or session.lost_sync:
                continue
            unsupported = self._features(session, tally)
            self._fua(session, tally)
            self._no_hole(session, tally)
            if "NBD_CMD_WRITE_ZEROES" not in unsupported:
                for frame, time, cookie, error in tally.wrong_fast_zero:
                    self.flag_at(session, frame, time, f"NBD_CMD_WRITE_ZEROES with FAST_ZERO (cookie {cookie:#x}) "
                                 f"failed with {ERRORS.name(error)} ({error}) under NBD_FLAG_SEND_FAST_ZERO; a slow "
                                 "zero must fail with NBD_ENOTSUP", check="fast-zero-wrong-error", cookie=cookie)

    def _features(self, session: Session, tally: _Tally) -> set[str]:
        out = set()
        for cmd, need in _FEATURES.items():
            name = COMMANDS.name(cmd)
            n = tally.refused[name]
            if n and not tally.accepted[name]:
                out.add(name)
                frame, time, error = tally.first[name]
                self.flag_at(session, frame, time, f"NBD_FLAG_{need.name} was advertised, yet all {n} {name} "
                             f"requests were refused (first: frame {frame}, {ERRORS.name(error)})",
                             check="unsupported-feature", command=name, refused=n)
        return out

    def _fua(self, session: Session, tally: _Tally) -> None:
        for key, n in sorted(tally.refused.items()):
            if not key.endswith("+FUA"):
                continue
            name = key[:-4]
            if tally.accepted[key] or not tally.accepted[f"{name}-FUA"]:
                continue
            frame, time, error = tally.first[key]
            self.flag_at(session, frame, time, f"NBD_FLAG_SEND_FUA was advertised, yet all {n} {name} requests "
                         f"with FUA were refused while {name} without FUA succeeded (first: frame {frame}, "
                         f"{ERRORS.name(error)})", check="fua-refused", command=name, refused=n)

    def _no_hole(self, session: Session, tally: _Tally) -> None:
        n = tally.refused["NO_HOLE"]
        if n and not tally.accepted["NO_HOLE"] and tally.accepted["plain"]:
            frame, time, error = tally.first["NO_HOLE"]
            self.flag_at(session, frame, time, f"NBD_FLAG_SEND_WRITE_ZEROES was advertised, yet all {n} "
                         f"NBD_CMD_WRITE_ZEROES requests with NO_HOLE were refused while plain ones succeeded "
                         f"(first: frame {frame}, {ERRORS.name(error)})", check="no-hole-refused", refused=n)


class WriteZeroesError(Rule):
    INFO = RuleInfo("write-zeroes-error", "warning", "server", "Request types (NBD_CMD_WRITE_ZEROES)",
                    "a write-zeroes reply whose error value the fast-zero rules forbid")
    CHECKS = (
        Check("enotsup-without-fast-zero", ("cmd-write-zeroes.8",), "NBD_ENOTSUP for a write-zeroes without "
              "FAST_ZERO from a server that advertised SEND_FAST_ZERO",
              consequence="the client asked for zeroes however slow; ENOTSUP is the fast-zero answer and makes it "
                          "believe the server cannot zero at all",
              fix="server: fall back to writing zeroes when FAST_ZERO is clear; keep ENOTSUP for fast requests",
              example="NBD_CMD_WRITE_ZEROES without FAST_ZERO (cookie 0x3) failed with NBD_ENOTSUP although the "
                      "server advertised NBD_FLAG_SEND_FAST_ZERO"),
        Check("enotsup-unadvertised", ("cmd-write-zeroes.12",), "NBD_ENOTSUP for a write-zeroes from a server "
              "that did not advertise SEND_FAST_ZERO",
              consequence="older clients do not expect ENOTSUP here and treat it as a hard failure",
              fix="server: pass no EOPNOTSUPP from the storage through; write zeroes the slow way",
              example="NBD_CMD_WRITE_ZEROES (cookie 0x3) failed with NBD_ENOTSUP although the server did not "
                      "advertise NBD_FLAG_SEND_FAST_ZERO"),
        Check("fast-zero-unadvertised-not-einval", ("cmd-write-zeroes.13",), "a FAST_ZERO request the server did "
              "not advertise was not failed with NBD_EINVAL",
              consequence="the client may read success (or another error) as the fast-zero answer it never was "
                          "entitled to", fix="server: fail a FAST_ZERO flag it did not advertise with NBD_EINVAL",
              example="NBD_CMD_WRITE_ZEROES with FAST_ZERO (cookie 0x3), which the server did not advertise, was "
                      "answered with success, not NBD_EINVAL"),
        Check("fast-zero-eoverflow", ("cmd-write-zeroes.9",), "a FAST_ZERO request failed with NBD_EOVERFLOW",
              consequence="the client cannot tell a length problem from the slow-zero answer it waits for",
              fix="server: answer a fast-zero request with NBD_ENOTSUP or do it; never NBD_EOVERFLOW",
              example="NBD_CMD_WRITE_ZEROES with FAST_ZERO (cookie 0x3) failed with NBD_EOVERFLOW"),
    )
    EVENTS = (ev.SimpleReply, ev.ReplyChunk)
    FOR_COMMANDS = frozenset({Cmd.WRITE_ZEROES})

    def __init__(self) -> None:
        super().__init__()
        self._errors = ReplyErrors()

    def message(self, session: Session, event: ev.Event) -> None:
        if not isinstance(event, ev.SimpleReply | ev.ReplyChunk) or event.command != Cmd.WRITE_ZEROES \
                or session.transmission_flags is None:
            return
        error = self._errors.completed(session, event)
        if error is None:
            return
        fast, advertised = bool((event.request_flags or 0) & _FAST_ZERO), session.has_flag(TF.SEND_FAST_ZERO)
        what = f"NBD_CMD_WRITE_ZEROES{' with FAST_ZERO' if fast else ''} (cookie {event.cookie:#x})"
        if fast and not advertised:
            if error != _EINVAL:
                answer = "success" if not error else ERRORS.name(error)
                self.flag(session, event, f"{what}, which the server did not advertise, was answered with "
                          f"{answer}, not NBD_EINVAL", check="fast-zero-unadvertised-not-einval",
                          cookie=event.cookie, error=error)
        elif error == _ENOTSUP and not fast:
            if advertised:
                self.flag(session, event, f"{what} failed with NBD_ENOTSUP although the server advertised "
                          "NBD_FLAG_SEND_FAST_ZERO", check="enotsup-without-fast-zero", cookie=event.cookie)
            else:
                self.flag(session, event, f"{what} failed with NBD_ENOTSUP although the server did not advertise "
                          "NBD_FLAG_SEND_FAST_ZERO", check="enotsup-unadvertised", cookie=event.cookie)
        elif fast and error == _EOVERFLOW:
            self.flag(session, event, f"{what} failed with NBD_EOVERFLOW", check="fast-zero-eoverflow",
                      cookie=event.cookie)
