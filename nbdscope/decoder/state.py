"""What each direction of a connection expects next, and the one table that says
what moves it.

Each direction (``ReceiveBuffer``) is in one ``State``. Handlers never assign a
state: they report what happened as an ``Input`` to ``Machine.fire``, which looks
up, for the side where it happened and for its peer, the row (where it happened,
what happened, the side to move, its state) and moves that side. Effects that
cross directions (the server's greeting letting the client's flags be read, the
end of the handshake, STARTTLS) are rows for the peer, here and nowhere else.

A row missing for the side where the input happened is a decoder bug (the tests
check that none is reachable); a missing row for the peer means "unaffected".
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING

from nbdscope.vocab import Direction

if TYPE_CHECKING:
    from nbdscope.decoder.buffer import ReceiveBuffer
    from nbdscope.decoder.connection import Connection


class State(Enum):
    # the client's side (c2s)
    WAIT_GREETING = "wait-greeting"  # its first bytes mean nothing until the server's greeting is known
    CLIENT_FLAGS = "client-flags"
    OPTIONS = "options"
    REQUESTS = "requests"
    # the server's side (s2c)
    GREETING = "greeting"
    OPTION_REPLIES = "option-replies"
    REPLIES = "replies"
    # either side
    HUNT = "hunt"  # framing lost: looking for the next plausible header
    TLS = "tls"  # encrypted: bytes are counted, not decoded


CLIENT_STATES = frozenset({State.WAIT_GREETING, State.CLIENT_FLAGS, State.OPTIONS, State.REQUESTS,
                           State.HUNT, State.TLS})
SERVER_STATES = frozenset({State.GREETING, State.OPTION_REPLIES, State.REPLIES, State.HUNT, State.TLS})


class Input(Enum):
    """What a handler saw, as far as states care."""

    NEWSTYLE_GREETING = "newstyle greeting"  # s2c
    CLIENT_FLAGS = "client flags"  # c2s
    HANDSHAKE_DONE = "handshake done"  # s2c: oldstyle greeting, export-name reply, GO acknowledged
    MID_STREAM = "mid-stream"  # either: a request or reply while we thought we were in the handshake
    REQUEST_AMONG_OPTIONS = "request among options"  # c2s, once transmission began
    REPLY_AMONG_OPTION_REPLIES = "reply among option replies"  # s2c, while the client sends requests
    STARTTLS = "starttls acknowledged"  # s2c
    BAD_BYTES = "bad bytes"  # either: a message that cannot be
    GAP = "gap"  # either: the capture lost bytes, and framing with them
    UNFRAMED = "unframed"  # s2c: a reply whose data length nobody knows
    FOUND_OPTION = "found an option"  # c2s, hunting
    FOUND_REQUEST = "found a request"  # c2s, hunting
    FOUND_GREETING = "found a greeting"  # s2c, hunting
    FOUND_OPTION_REPLY = "found an option reply"  # s2c, hunting
    FOUND_REPLY = "found a reply"  # s2c, hunting
    DECRYPTED = "decrypted"  # either: the first plaintext of a direction came out of TLS (a key log)
    UNDECRYPTABLE = "undecryptable"  # either: decryption gave up; both sides go back to counting bytes


S = State
_C: Direction = "c2s"
_S: Direction = "s2c"
_DECODING_C = (S.WAIT_GREETING, S.CLIENT_FLAGS, S.OPTIONS, S.REQUESTS)
_DECODING_S = (S.GREETING, S.OPTION_REPLIES, S.REPLIES)

# (where the input happened, input, side moved, its state) -> its next state
TRANSITIONS: dict[tuple[Direction, Input, Direction, State], State] = {
    (_S, Input.NEWSTYLE_GREETING, _S, S.GREETING): S.OPTION_REPLIES,
    (_S, Input.NEWSTYLE_GREETING, _C, S.WAIT_GREETING): S.CLIENT_FLAGS,
    (_C, Input.CLIENT_FLAGS, _C, S.CLIENT_FLAGS): S.OPTIONS,
    (_C, Input.REQUEST_AMONG_OPTIONS, _C, S.OPTIONS): S.REQUESTS,
    (_S, Input.REPLY_AMONG_OPTION_REPLIES, _S, S.OPTION_REPLIES): S.REPLIES,
    **{(_S, Input.HANDSHAKE_DONE, _S, s): S.REPLIES for s in (S.GREETING, S.OPTION_REPLIES)},
    **{(_S, Input.HANDSHAKE_DONE, _C, s): S.REQUESTS for s in _DECODING_C},  # a hunting client keeps hunting
    **{(_S, Input.STARTTLS, side, s): S.TLS
       for side, states in ((_S, (S.OPTION_REPLIES,)), (_C, (*_DECODING_C, S.HUNT))) for s in states},
    # entering transmission mid-stream changes the phase, not what either side expects
    (_C, Input.MID_STREAM, _C, S.REQUESTS): S.REQUESTS,
    (_S, Input.MID_STREAM, _S, S.REPLIES): S.REPLIES,
    (_S, Input.MID_STREAM, _S, S.HUNT): S.HUNT,  # a reply of unknown length: hunting already
    (_S, Input.UNFRAMED, _S, S.REPLIES): S.HUNT,
    **{(side, Input.BAD_BYTES, side, s): S.HUNT for side, states in ((_C, _DECODING_C), (_S, _DECODING_S))
       for s in states},
    **{(side, Input.GAP, side, s): S.HUNT for side, states in ((_C, _DECODING_C), (_S, _DECODING_S))
       for s in (*states, S.HUNT)},
    (_C, Input.FOUND_OPTION, _C, S.HUNT): S.OPTIONS,
    (_C, Input.FOUND_REQUEST, _C, S.HUNT): S.REQUESTS,
    (_S, Input.FOUND_GREETING, _S, S.HUNT): S.GREETING,
    (_S, Input.FOUND_OPTION_REPLY, _S, S.HUNT): S.OPTION_REPLIES,
    (_S, Input.FOUND_REPLY, _S, S.HUNT): S.REPLIES,
    # decrypted with a key log: the option haggling starts over inside TLS
    (_C, Input.DECRYPTED, _C, S.TLS): S.OPTIONS,
    (_S, Input.DECRYPTED, _S, S.TLS): S.OPTION_REPLIES,
    **{(side, Input.UNDECRYPTABLE, moved, s): S.TLS for side in (_C, _S)
       for moved, states in ((_C, (*_DECODING_C, S.HUNT, S.TLS)), (_S, (*_DECODING_S, S.HUNT, S.TLS)))
       for s in states},
}

# inputs after which both sides are in the transmission phase
ENTERS_TRANSMISSION = frozenset({Input.HANDSHAKE_DONE, Input.MID_STREAM})

Handler = Callable[["ReceiveBuffer"], bool]


class Machine:
    """Applies the table to the two sides of one connection and keeps the phase flags."""

    def __init__(self, conn: Connection, handlers: dict[State, Handler]) -> None:
        self.conn = conn
        self.handlers = handlers

    def enter(self, side: ReceiveBuffer, state: State) -> None:
        """Put a side in its first state (only when the connection is made)."""
        side.state, side.step = state, self.handlers[state]

    def fire(self, what: Input, side: ReceiveBuffer) -> None:
        conn = self.conn
        peer = conn._s if side is conn._c else conn._c
        for moved in (side, peer):
            new = TRANSITIONS.get((side.dir, what, moved.dir, moved.state))
            if new is None:
                continue
            if new is State.HUNT and moved.state is not State.HUNT:
                # say where decoding resumed, unless a gap hit before anything was framed
                moved.announce = not (what is Input.GAP and moved.state in (State.GREETING, State.WAIT_GREETING))
                moved.hunt_from = moved.offset
            moved.state, moved.step = new, self.handlers[new]
        if what in ENTERS_TRANSMISSION:
            conn.transmission = True
            conn.phase = "transmission"
        elif what is Input.STARTTLS:
            conn.tls = True
