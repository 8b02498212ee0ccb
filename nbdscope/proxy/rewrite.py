"""Deliberate changes to what the server advertises, for debugging clients (off
unless asked): set or clear transmission flag bits in the server's handshake.

Sans-IO like the decoder: fed the server's bytes, returns the bytes to forward.
It holds back only an incomplete handshake message, and passes everything
through untouched once the handshake is over (or once it cannot follow it)."""

from __future__ import annotations

import struct

from nbdscope.spec import COMMANDS, OPTIONS, TRANSMISSION_FLAGS, Info, Opt, Rep
from nbdscope.spec import magics as M
from nbdscope.spec.codes import OPTION_REPLY_HEADER

MAX_OPTION_REPLY = 1 << 20  # a longer option reply is passed through unread


def parse_bits(text: str) -> int:
    """'CAN_MULTI_CONN,10' -> the mask of those transmission flag bits."""
    mask = 0
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part.isdigit():
            number = int(part)
            if not 0 <= number < 16:
                raise ValueError(f"bit {number} is outside the 16-bit transmission flags")
        else:
            bit = TRANSMISSION_FLAGS.by_name(part.upper())
            if bit is None:
                raise ValueError(f"{part!r} is not a transmission flag (e.g. CAN_MULTI_CONN, SEND_CACHE, 8)")
            number = bit.number
        mask |= 1 << number
    return mask


def parse_delays(text: str) -> dict[int, float]:
    """'READ=5,WRITE=20' -> {command: seconds}; milliseconds on the command line."""
    delays: dict[int, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, ms = part.partition("=")
        code = COMMANDS.by_name(name.strip().upper())
        if not sep or code is None:
            raise ValueError(f"{part!r}: expected COMMAND=MILLISECONDS, e.g. READ=5 or NBD_CMD_WRITE=20")
        try:
            delays[code.value] = float(ms) / 1000
        except ValueError:
            raise ValueError(f"{part!r}: {ms!r} is not a number of milliseconds") from None
    return delays


class FlagRewriter:
    def __init__(self, set_mask: int, clear_mask: int) -> None:
        self.set_mask, self.clear_mask = set_mask, clear_mask
        self.buf = bytearray()
        self.state = "greeting"
        # (advertised, forwarded, where): a client may see the flags twice (NBD_OPT_INFO, then NBD_OPT_GO),
        # and two identical lines about one session would read as one rewrite logged twice
        self.changes: list[tuple[int, int, str]] = []

    def feed(self, data: bytes) -> bytes:
        if self.state == "pass":
            return data
        self.buf += data
        out = bytearray()
        while self.state != "pass":
            taken = self._step(out)
            if not taken:
                break
        if self.state == "pass":
            out += self.buf
            self.buf.clear()
        return bytes(out)

    def _patch(self, message: bytearray, at: int, where: str) -> None:
        (old,) = struct.unpack_from(">H", message, at)
        new = (old | self.set_mask) & ~self.clear_mask & 0xFFFF
        if new != old:
            struct.pack_into(">H", message, at, new)
        self.changes.append((old, new, where))

    def _take(self, n: int, out: bytearray, patch_at: int | None = None, where: str = "") -> bool:
        message = self.buf[:n]
        del self.buf[:n]
        if patch_at is not None:
            self._patch(message, patch_at, where)
        out += message
        return True

    def _step(self, out: bytearray) -> bool:
        """Forward one whole handshake message from the buffer; False when it is not all there yet."""
        if self.state == "greeting":
            return self._greeting(out)
        buf = self.buf
        if len(buf) < 8:
            return False
        if buf[:8] != M.OPTION_REPLY_MAGIC_BYTES:
            # the answer to NBD_OPT_EXPORT_NAME: size, then the flags
            if len(buf) < 10:
                return False
            self.state = "pass"
            return self._take(10, out, patch_at=8, where="the reply to NBD_OPT_EXPORT_NAME")
        return self._option_reply(out)

    def _greeting(self, out: bytearray) -> bool:
        """The server's first message: oldstyle (flags inside it) or newstyle (options follow)."""
        buf = self.buf
        if len(buf) < 16:
            return False
        if buf[:8] != M.NBDMAGIC_BYTES:
            self.state = "pass"
            return True
        if buf[8:16] == M.CLISERV_MAGIC_BYTES:
            if len(buf) < 28 + M.OLDSTYLE_ZEROES:
                return False
            self.state = "pass"
            # the low half of the 32-bit flags
            return self._take(28 + M.OLDSTYLE_ZEROES, out, patch_at=26, where="the oldstyle greeting")
        if len(buf) < 18:
            return False
        self.state = "options"
        return self._take(18, out)

    def _option_reply(self, out: bytearray) -> bool:
        """One option reply; NBD_INFO_EXPORT carries the flags, and ACK to GO or STARTTLS ends the haggling."""
        buf = self.buf
        if len(buf) < OPTION_REPLY_HEADER:
            return False
        _, option, reply, length = struct.unpack_from(">QIII", buf)
        if length > MAX_OPTION_REPLY:
            self.state = "pass"
            return True
        if len(buf) < OPTION_REPLY_HEADER + length:
            return False
        is_export = reply == Rep.INFO and length >= 12 and \
            struct.unpack_from(">H", buf, OPTION_REPLY_HEADER)[0] == Info.EXPORT
        if reply == Rep.ACK and option in (Opt.GO, Opt.STARTTLS):
            self.state = "pass"
        return self._take(OPTION_REPLY_HEADER + length, out, OPTION_REPLY_HEADER + 10 if is_export else None,
                          f"NBD_INFO_EXPORT in the reply to {OPTIONS.name(option)}")
