"""Pure parsers for the variable parts of messages (option payloads, option
reply payloads, reply chunk payloads). They take the complete payload bytes and
return decoded fields plus a problem string when the payload contradicts its own
length fields; they never raise on hostile input."""

from __future__ import annotations

import struct
from typing import Any

from nbdscope.spec import Info, Opt, Rep, ReplyType
from nbdscope.spec.codes import is_rep_error, is_reply_type_error

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")


def option_request(option: int, data: bytes) -> dict[str, Any]:
    """Fields of an option request payload (spec "Option types")."""
    n = len(data)
    if option == Opt.EXPORT_NAME:
        return {"export_name": _text(data)}
    if option in (Opt.INFO, Opt.GO):
        return _info_request(data)
    if option in (Opt.LIST_META_CONTEXT, Opt.SET_META_CONTEXT):
        return _meta_context_request(data)
    if n and option in (Opt.ABORT, Opt.LIST, Opt.STARTTLS, Opt.STRUCTURED_REPLY, Opt.EXTENDED_HEADERS):
        return {"problem": f"option carries {n} bytes of data but must carry none"}
    return {}


def _named_export(data: bytes, what: str, count_size: int) -> tuple[str, int] | str:
    """The export name that opens an INFO, GO or meta context request, and where its count field
    starts; or what is wrong (the payload too short for the name and a ``count_size``-byte count)."""
    n = len(data)
    if n < 4 + count_size:
        return f"payload of {n} bytes is shorter than the {4 + count_size} bytes {what} needs"
    (nlen,) = _U32.unpack_from(data, 0)
    if 4 + nlen + count_size > n:
        return f"export name length {nlen} runs past the {n}-byte payload"
    return _text(data[4:4 + nlen]), 4 + nlen


def _info_request(data: bytes) -> dict[str, Any]:
    named = _named_export(data, "an INFO/GO request", 2)
    if isinstance(named, str):
        return {"problem": named}
    name, at = named
    (count,) = _U16.unpack_from(data, at)
    rest = len(data) - (at + 2)
    reqs = tuple(_U16.unpack_from(data, at + 2 + 2 * i)[0] for i in range(min(count, rest // 2)))
    out: dict[str, Any] = {"export_name": name, "info_requests": reqs}
    if rest != 2 * count:
        out["problem"] = f"{count} information requests need {2 * count} bytes but {rest} follow the name"
    return out


def _meta_context_request(data: bytes) -> dict[str, Any]:
    named = _named_export(data, "a meta context request", 4)
    if isinstance(named, str):
        return {"problem": named}
    name, at = named
    n = len(data)
    (count,) = _U32.unpack_from(data, at)
    pos = at + 4
    queries: list[str] = []
    problem = None
    for _ in range(count):
        if pos + 4 > n:
            problem = f"{count} queries announced but the payload ends after {len(queries)}"
            break
        (qlen,) = _U32.unpack_from(data, pos)
        if pos + 4 + qlen > n:
            problem = f"query length {qlen} runs past the end of the payload"
            break
        queries.append(_text(data[pos + 4:pos + 4 + qlen]))
        pos += 4 + qlen
    if problem is None and pos != n:
        problem = f"{n - pos} bytes left over after {count} queries"
    out: dict[str, Any] = {"export_name": name, "queries": tuple(queries)}
    if problem:
        out["problem"] = problem
    return out


def option_reply(reply: int, data: bytes) -> dict[str, Any]:
    """Fields of an option reply payload (spec "Option reply types")."""
    n = len(data)
    if reply == Rep.ACK:
        return {"problem": f"ACK carries {n} bytes of data but must carry none"} if n else {}
    if reply == Rep.SERVER:
        if n < 4:
            return {"problem": f"NBD_REP_SERVER payload of {n} bytes has no name length"}
        (nlen,) = _U32.unpack_from(data, 0)
        if 4 + nlen > n:
            return {"problem": f"export name length {nlen} runs past the {n}-byte payload"}
        out: dict[str, Any] = {"name": _text(data[4:4 + nlen])}
        if n > 4 + nlen:
            out["description"] = _text(data[4 + nlen:])
        return out
    if reply == Rep.INFO:
        return _info(data)
    if reply == Rep.META_CONTEXT:
        if n < 4:
            return {"problem": f"NBD_REP_META_CONTEXT payload of {n} bytes has no context id"}
        return {"context_id": _U32.unpack_from(data, 0)[0], "name": _text(data[4:])}
    if is_rep_error(reply):
        return {"message": _text(data)} if n else {}
    return {}


_INFO_SIZES = {Info.EXPORT: 12, Info.BLOCK_SIZE: 14}


def _info(data: bytes) -> dict[str, Any]:
    n = len(data)
    if n < 2:
        return {"problem": f"NBD_REP_INFO payload of {n} bytes has no information type"}
    (itype,) = _U16.unpack_from(data, 0)
    out: dict[str, Any] = {"info_type": itype}
    want = _INFO_SIZES.get(itype)
    if want is not None and n != want:
        out["problem"] = f"information type {itype} needs {want} bytes of payload, got {n}"
        if n < want:
            return out
    if itype == Info.EXPORT:
        out["size"] = _U64.unpack_from(data, 2)[0]
        out["transmission_flags"] = _U16.unpack_from(data, 10)[0]
    elif itype == Info.BLOCK_SIZE:
        out["min_block"], out["preferred_block"], out["max_payload"] = struct.unpack_from(">III", data, 2)
    elif itype == Info.NAME:
        out["name"] = _text(data[2:])
    elif itype == Info.DESCRIPTION:
        out["description"] = _text(data[2:])
    return out


def reply_chunk(rtype: int, data: bytes, total: int, max_extents: int) -> dict[str, Any]:
    """Fields of a structured/extended reply chunk payload.

    ``data`` may be a prefix of the payload (OFFSET_DATA keeps only its offset;
    oversized payloads are cut); ``total`` is the length the header announced."""
    n = len(data)
    if rtype == ReplyType.NONE:
        return {"problem": f"NBD_REPLY_TYPE_NONE must have length 0, has {total}"} if total else {}
    if rtype == ReplyType.OFFSET_DATA:
        if total < 9:
            return {"problem": f"OFFSET_DATA needs at least 9 bytes (offset and data), has {total}",
                    **({"offset": _U64.unpack_from(data, 0)[0]} if n >= 8 else {})}
        return {"offset": _U64.unpack_from(data, 0)[0], "data_length": total - 8}
    if rtype == ReplyType.OFFSET_HOLE:
        if total != 12 or n < 12:
            return {"problem": f"OFFSET_HOLE must have length 12, has {total}"}
        return {"offset": _U64.unpack_from(data, 0)[0], "hole_length": _U32.unpack_from(data, 8)[0]}
    if rtype == ReplyType.BLOCK_STATUS:
        return _extents(data, total, max_extents, ext=False)
    if rtype == ReplyType.BLOCK_STATUS_EXT:
        return _extents(data, total, max_extents, ext=True)
    if is_reply_type_error(rtype):
        return _error_chunk(rtype, data, total)
    return {}


def judged_prefix(rtype: int) -> int:
    """How many bytes of a chunk's payload its checks read (beyond them they only count bytes, which
    the header's length gives): a chunk the capture cut shorter than this reports no problem."""
    if rtype == ReplyType.BLOCK_STATUS:
        return 4
    if rtype == ReplyType.BLOCK_STATUS_EXT:
        return 8
    if rtype == ReplyType.OFFSET_HOLE:
        return 12
    return 6 if is_reply_type_error(rtype) else 0


def _extents(data: bytes, total: int, max_extents: int, *, ext: bool) -> dict[str, Any]:
    head, unit = (8, 16) if ext else (4, 8)
    n = len(data)
    if total < head:
        return {"problem": f"block status chunk of {total} bytes is shorter than its {head}-byte header"}
    if n < head:  # a prefix the capture cut (the caller drops the problem)
        return {"problem": f"only {n} bytes of the {head}-byte block status header were captured"}
    out: dict[str, Any] = {"context_id": _U32.unpack_from(data, 0)[0]}
    problems = []
    if ext:
        out["descriptor_count"] = _U32.unpack_from(data, 4)[0]
    if (total - head) % unit or total == head:
        problems.append(f"length {total} is not {head} + a positive multiple of {unit}")
    count = (min(n, total) - head) // unit
    if ext and out["descriptor_count"] != (total - head) // unit:
        problems.append(f"descriptor count {out['descriptor_count']} disagrees with length {total}")
    fmt = struct.Struct(">QQ" if ext else ">II")
    keep = min(count, max_extents)
    out["extents"] = tuple(fmt.unpack_from(data, head + unit * i) for i in range(keep))
    if keep < (total - head) // unit:
        out["extents_truncated"] = True
    if problems:
        out["problem"] = "; ".join(problems)
    return out


def _error_chunk(rtype: int, data: bytes, total: int) -> dict[str, Any]:
    n = len(data)
    if total < 6 or n < 6:
        return {"problem": f"error chunk of {total} bytes is shorter than the 6 bytes of error and message length"}
    error, mlen = struct.unpack_from(">IH", data, 0)
    out: dict[str, Any] = {"error": error, "message": _text(data[6:6 + mlen])}
    want = 6 + mlen + (8 if rtype == ReplyType.ERROR_OFFSET else 0)
    if rtype in (ReplyType.ERROR, ReplyType.ERROR_OFFSET) and total != want:
        out["problem"] = f"error chunk length {total} disagrees with its message length {mlen} (expected {want})"
    elif total < want:
        out["problem"] = f"message length {mlen} runs past the chunk length {total}"
    if rtype == ReplyType.ERROR_OFFSET and n >= 6 + mlen + 8:
        out["offset"] = _U64.unpack_from(data, 6 + mlen)[0]
    return out


def block_status_payload(data: bytes) -> dict[str, Any]:
    """The BLOCK_STATUS payload form (extended headers): effect length and context ids."""
    if len(data) < 8:
        return {}
    count = (len(data) - 8) // 4
    return {"effect_length": _U64.unpack_from(data, 0)[0],
            "context_ids": tuple(_U32.unpack_from(data, 8 + 4 * i)[0] for i in range(count))}
