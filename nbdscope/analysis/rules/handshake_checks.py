"""The checks of the option-protocol rule (rules/handshake.py): each way option haggling can go
wrong, the spec rows it breaks, and what to tell the user. Kept apart from the logic because the
declarations are long."""

from __future__ import annotations

from nbdscope.analysis.anomaly import Check


def _c(name: str, requires: tuple[str, ...], summary: str, consequence: str, fix: str, example: str,
       **kw: object) -> Check:
    return Check(name, requires, summary, consequence=consequence, fix=fix, example=example, **kw)  # type: ignore[arg-type]


_C, _S = "client", "server"

GREETING_AND_FLAGS = (
    _c("oldstyle-on-newstyle-port", ("newstyle.3",), "an oldstyle greeting on the port reserved for newstyle",
       "newstyle clients connecting to 10809 cannot negotiate an export", "server: serve newstyle on 10809",
       "oldstyle greeting on port 10809", blame=_S),
    _c("no-zeroes-not-offered", ("cflags.2",), "the client set NBD_FLAG_C_NO_ZEROES though the server did not offer "
       "NBD_FLAG_NO_ZEROES", "the server must drop the connection; if it does not, the two disagree on the 124 zero "
       "bytes after NBD_OPT_EXPORT_NAME", "client: set C_NO_ZEROES only when the greeting has NO_ZEROES",
       "client set NBD_FLAG_C_NO_ZEROES but the server did not offer NBD_FLAG_NO_ZEROES", blame=_C),
    _c("no-fixed-newstyle-flag", ("fixed-newstyle.1",), "the server offered fixed newstyle and the client did not "
       "set NBD_FLAG_C_FIXED_NEWSTYLE", "a strict server may treat the client as non-fixed and drop it on its "
       "first unknown option", "client: echo C_FIXED_NEWSTYLE", "client flags 0x00000000 lack "
       "NBD_FLAG_C_FIXED_NEWSTYLE although the server offered fixed newstyle", blame=_C),
    _c("kept-bad-client-flags", ("newstyle.6", "cflags.5"), "the server went on haggling after client flags it had "
       "to reject (undefined bits, or a flag it did not offer)", "the two sides may disagree on framing (the "
       "NO_ZEROES padding)", "server: close the connection on unknown or unoffered client flags",
       "server answered options after client flags 0x00000006 it had to reject (frame 3)", blame=_S),
    _c("replies-without-fixed-newstyle", ("opt-export-name.2",), "the server sent option replies after a greeting "
       "without NBD_FLAG_FIXED_NEWSTYLE", "clients that believe the greeting expect no option replies",
       "server: set NBD_FLAG_FIXED_NEWSTYLE when it answers options", "option reply although the greeting did not "
       "offer fixed newstyle", blame=_S),
    _c("zeroes-despite-no-zeroes", ("hflags.2", "cflags.3"), "the server sent the 124 zero bytes after "
       "NBD_OPT_EXPORT_NAME although NO_ZEROES was agreed", "the client reads the zeroes as the first reply and "
       "loses sync", "server: omit the padding when both NO_ZEROES flags are set",
       "124 zero bytes after the export-name reply although NO_ZEROES was agreed", blame=_S),
    _c("zeroes-missing", ("hflags.4",), "the server left out the 124 zero bytes after NBD_OPT_EXPORT_NAME though "
       "the client did not set NBD_FLAG_C_NO_ZEROES", "the client reads the first reply as padding and loses sync",
       "server: send the padding unless the client set C_NO_ZEROES", "export-name reply without its 124 zero "
       "bytes although the client did not set NBD_FLAG_C_NO_ZEROES", blame=_S),
)

CLIENT_OPTIONS = (
    _c("option-before-reply", ("fixed-newstyle.2",), "the client sent an option before the final reply to the "
       "previous one", "the server may read the replies as belonging to the wrong option", "client: wait for "
       "NBD_REP_ACK or an error before the next option", "NBD_OPT_GO sent while NBD_OPT_LIST (frame 3) still "
       "awaits its final reply", blame=_C),
    _c("option-after-handshake", ("opt-info.16",), "the client sent an option after NBD_OPT_GO succeeded",
       "the server reads the option as a transmission request", "client: start transmission after the GO "
       "acknowledgement", "client sent an option after NBD_OPT_GO was acknowledged", blame=_C),
    _c("option-after-export-name", (), "the client sent an option after NBD_OPT_EXPORT_NAME ended the handshake",
       "the server reads the option as a transmission request", "client: NBD_OPT_EXPORT_NAME is the last option",
       "client sent an option after the handshake ended with NBD_OPT_EXPORT_NAME", severity="error", blame=_C),
    _c("option-after-abort", ("haggle-end.1",), "the client sent another option after NBD_OPT_ABORT",
       "the server is closing: the option is lost", "client: drop the connection after NBD_OPT_ABORT",
       "NBD_OPT_GO after NBD_OPT_ABORT (frame 5)", blame=_C),
    _c("option-after-shutdown", ("haggle-end.10",), "the client went on haggling after NBD_REP_ERR_SHUTDOWN instead "
       "of NBD_OPT_ABORT", "the server is going away; the option cannot succeed", "client: answer "
       "NBD_REP_ERR_SHUTDOWN with NBD_OPT_ABORT", "NBD_OPT_GO after NBD_REP_ERR_SHUTDOWN (frame 6)", blame=_C),
    _c("no-fallback-to-export-name", ("opt-export-name.4", "opt-info.13"), "after NBD_REP_ERR_UNSUP to NBD_OPT_GO "
       "the client gave up instead of trying NBD_OPT_EXPORT_NAME", "the client cannot use servers older than "
       "NBD_OPT_GO", "client: retry with NBD_OPT_EXPORT_NAME when GO is unsupported", "client ended the handshake "
       "with NBD_OPT_ABORT after NBD_OPT_GO was unsupported (frame 4), without trying NBD_OPT_EXPORT_NAME",
       blame=_C),
    _c("repeated-structured-reply", ("fixed-newstyle.3",), "the client asked for structured replies again after "
       "the server agreed", "a server may fail the repeat with NBD_REP_ERR_INVALID", "client: ask once",
       "NBD_OPT_STRUCTURED_REPLY again after the acknowledgement in frame 4", blame=_C),
    _c("data-on-list", ("opt-list.1",), "NBD_OPT_LIST carried data", "the server should reject it",
       "client: send NBD_OPT_LIST with length 0", "NBD_OPT_LIST carries 4 bytes of data", blame=_C),
    _c("data-on-structured-reply", ("opt-structured-reply.1",), "NBD_OPT_STRUCTURED_REPLY carried data",
       "the server should reject it", "client: send it with length 0",
       "NBD_OPT_STRUCTURED_REPLY carries 4 bytes of data", blame=_C),
    _c("data-on-abort", ("opt-abort.2",), "NBD_OPT_ABORT carried data (a SHOULD NOT; servers are told to ignore it)",
       "harmless with servers that follow the spec", "client: send NBD_OPT_ABORT with length 0",
       "NBD_OPT_ABORT carries 4 bytes of data", blame=_C),
    _c("info-name-too-long", ("opt-info.1",), "an NBD_OPT_INFO/GO name length runs past the option data (more than "
       "length - 6)", "the server cannot parse the request", "client: name length = option length - 6 - 2 x "
       "requests", "NBD_OPT_GO: export name length 50 runs past the 12-byte payload", blame=_C),
    _c("request-malformed", (), "an option payload contradicts its own count or length fields",
       "the server cannot parse the request", "client: make the counts and lengths add up",
       "NBD_OPT_SET_META_CONTEXT: query length 99 runs past the end of the payload", severity="error", blame=_C),
    _c("duplicate-info-request", ("opt-info.2",), "an NBD_OPT_INFO/GO lists one information request twice",
       "servers may reject the request", "client: list each NBD_INFO type once",
       "NBD_OPT_GO asks for NBD_INFO_BLOCK_SIZE twice", blame=_C),
    _c("set-meta-context-before-structured", ("opt-set-meta-context.1", "opt-structured-reply.6"),
       "NBD_OPT_SET_META_CONTEXT before structured replies (or extended headers) were agreed",
       "block status needs structured replies; servers should refuse", "client: negotiate "
       "NBD_OPT_STRUCTURED_REPLY first", "NBD_OPT_SET_META_CONTEXT before structured replies or extended headers "
       "were agreed", blame=_C),
    _c("list-meta-context-before-structured", ("opt-list-meta-context.1",), "NBD_OPT_LIST_META_CONTEXT before "
       "structured replies (or extended headers) were agreed", "a server may refuse it", "client: negotiate "
       "NBD_OPT_STRUCTURED_REPLY first", "NBD_OPT_LIST_META_CONTEXT before structured replies were agreed",
       blame=_C),
    _c("list-query-without-namespace", ("opt-list-meta-context.2",), "a NBD_OPT_LIST_META_CONTEXT query does not "
       "start with a namespace and a colon", "the server cannot tell which namespace is meant",
       "client: write queries as namespace:leaf", "NBD_OPT_LIST_META_CONTEXT query 'allocation' has no namespace",
       blame=_C),
    _c("set-query-without-namespace", ("opt-set-meta-context.4",), "a NBD_OPT_SET_META_CONTEXT query does not "
       "start with a namespace and a colon", "the server cannot tell which namespace is meant",
       "client: write queries as namespace:leaf", "NBD_OPT_SET_META_CONTEXT query 'allocation' has no namespace",
       blame=_C),
)

STRINGS = (
    _c("string-has-nul", ("conventions.5",), "a string (export name, query, description, message) contains NUL",
       "C implementations cut the string at the NUL", "the sender: never put NUL in a string",
       "export name in NBD_OPT_GO contains NUL at index 3: 'dis\\x00k'"),
    _c("string-too-long", ("conventions.7",), "a string is longer than 4096 bytes",
       "peers may refuse or truncate it", "the sender: keep strings within 4096 bytes (256 advised)",
       "export name in NBD_OPT_GO is 5000 bytes (limit 4096)"),
    _c("string-long", ("conventions.6",), "a string is longer than the advised 256 bytes (at most 4096)",
       "older peers may cut it", "the sender: keep strings within 256 bytes",
       "export name in NBD_OPT_GO is 300 bytes (advised at most 256)"),
    _c("context-name-not-utf8", ("rep-meta-context.1",), "a metadata context name in NBD_REP_META_CONTEXT is not "
       "valid UTF-8", "clients cannot compare it with their query", "server: send context names as UTF-8",
       "NBD_REP_META_CONTEXT name 'base:\\xff' is not valid UTF-8", blame=_S),
)

SERVER_REPLIES = (
    _c("reply-to-unasked", (), "the server sent an option reply while no option awaited one",
       "the client takes it for the answer to its next option", "server: one final reply per option",
       "server replied to NBD_OPT_STRUCTURED_REPLY, which the client did not ask for (or which was already "
       "answered)", severity="error", blame=_S),
    _c("reply-wrong-option", (), "an option reply names another option than the one it answers",
       "clients match replies by option and give up", "server: echo the client's option number",
       "reply names NBD_OPT_INFO while NBD_OPT_GO (frame 3) awaits its reply", severity="error", blame=_S),
    _c("reply-to-export-name", ("newstyle.7", "opt-export-name.1"), "the server sent an option reply to "
       "NBD_OPT_EXPORT_NAME, which gets the export's size and flags or the end of the session",
       "the client reads the reply as the export size and flags", "server: to refuse NBD_OPT_EXPORT_NAME, close "
       "the connection", "option reply NBD_REP_ERR_UNKNOWN to NBD_OPT_EXPORT_NAME (frame 3)", blame=_S),
    _c("reply-malformed", (), "an option reply payload contradicts its own length fields (ACK with data, a "
       "META_CONTEXT without its id...)", "the client cannot parse the reply", "server: send payloads of the "
       "documented size", "reply to NBD_OPT_GO: ACK carries 4 bytes of data but must carry none",
       severity="error", blame=_S),
    _c("server-name-too-long", ("rep-server.1",), "an NBD_REP_SERVER name length runs past the reply",
       "the client cannot parse the export list", "server: name length at most reply length - 4",
       "NBD_REP_SERVER: export name length 40 runs past the 8-byte payload", blame=_S),
    _c("info-too-short", ("rep-info.6", "rep-info.7"), "an NBD_REP_INFO shorter than its 2-byte information type",
       "the client cannot tell what the reply describes", "server: every NBD_REP_INFO starts with its type",
       "NBD_REP_INFO payload of 1 bytes has no information type", blame=_S),
    _c("info-export-length", ("rep-info.5",), "an NBD_INFO_EXPORT reply whose length is not 12",
       "the client misreads size and flags", "server: 2 + 8 + 2 bytes", "information type 0 needs 12 bytes of "
       "payload, got 13", blame=_S),
    _c("info-block-size-length", ("rep-info.9",), "an NBD_INFO_BLOCK_SIZE reply whose length is not 14",
       "the client misreads the size constraints", "server: 2 + 3 x 4 bytes",
       "information type 3 needs 14 bytes of payload, got 10", blame=_S),
    _c("go-without-export-info", ("opt-info.6", "rep-info.1"), "NBD_OPT_GO/INFO acknowledged with no "
       "NBD_INFO_EXPORT before the ACK", "the client does not know the export's size and flags",
       "server: send NBD_INFO_EXPORT before NBD_REP_ACK", "NBD_OPT_GO acknowledged without an NBD_INFO_EXPORT "
       "reply before it", blame=_S),
    _c("padding-after-go", ("opt-info.15",), "zero padding after the NBD_REP_ACK that ends a successful NBD_OPT_GO",
       "the client reads the zeroes as its first reply and loses sync", "server: no padding after GO, whatever "
       "NO_ZEROES says (it concerns NBD_OPT_EXPORT_NAME only)", "124 zero bytes of padding after the NBD_REP_ACK "
       "that ends NBD_OPT_GO", blame=_S),
    _c("duplicate-info-reply", ("rep-info.2",), "one NBD_INFO type appears twice in one NBD_OPT_INFO/GO answer",
       "clients keep either value: the two sides may disagree", "server: send each information type once",
       "NBD_INFO_EXPORT sent twice for NBD_OPT_GO (first in frame 5)", blame=_S),
    _c("go-differs-from-info", ("opt-info.14",), "NBD_OPT_GO answered differently from the NBD_OPT_INFO just before "
       "it with the same parameters", "clients that planned from the INFO answer use wrong size or flags",
       "server: answer the same question the same way (nbd-server 3.24 reports size 0 to NBD_OPT_INFO)",
       "NBD_OPT_GO answered differently from the NBD_OPT_INFO just before it with the same parameters "
       "(NBD_INFO_EXPORT: size 0 vs 1048576)", blame=_S),
    _c("context-id-reused", ("opt-set-meta-context.6",), "NBD_OPT_SET_META_CONTEXT gave one context id to two "
       "contexts", "block status replies cannot be told apart", "server: a distinct id per selected context",
       "context id 1 given to both 'base:allocation' and 'qemu:dirty-bitmap:b' in one reply", blame=_S),
    _c("contexts-for-no-queries", ("opt-set-meta-context.5",), "NBD_OPT_SET_META_CONTEXT with no queries was "
       "answered with contexts", "the client believes no context is active", "server: select nothing for an "
       "empty query list", "NBD_REP_META_CONTEXT 'base:allocation' for a SET_META_CONTEXT with no queries",
       blame=_S),
    _c("context-reply-type", ("opt-list-meta-context.6",), "NBD_OPT_LIST_META_CONTEXT answered with a reply type "
       "other than NBD_REP_META_CONTEXT before its final reply", "the client cannot read the context list",
       "server: only NBD_REP_META_CONTEXT, then NBD_REP_ACK or an error", "NBD_REP_SERVER in the answer to "
       "NBD_OPT_LIST_META_CONTEXT", blame=_S),
    _c("list-context-id-nonzero", ("opt-list-meta-context.12",), "a NBD_OPT_LIST_META_CONTEXT reply carries a "
       "context id other than 0", "none (clients must disregard it), but clients may wrongly keep the id",
       "server: send id 0 when listing", "NBD_REP_META_CONTEXT to LIST carries context id 5", blame=_S),
    _c("meta-request-not-rejected", ("opt-list-meta-context.3",), "a meta context request whose lengths do not add "
       "up was accepted instead of failed with NBD_REP_ERR_INVALID", "the two sides disagree on what was asked",
       "server: fail unparsable requests with NBD_REP_ERR_INVALID", "malformed NBD_OPT_SET_META_CONTEXT (frame 3) "
       "acknowledged", blame=_S),
    _c("too-big-for-no-queries", ("opt-list-meta-context.9",), "NBD_OPT_LIST_META_CONTEXT with no queries failed "
       "with NBD_REP_ERR_TOO_BIG", "the client cannot learn the contexts", "server: list all contexts, or wildcards",
       "NBD_OPT_LIST_META_CONTEXT with no queries answered NBD_REP_ERR_TOO_BIG", blame=_S),
    _c("abort-not-acked", ("opt-abort.1",), "NBD_OPT_ABORT answered with something other than NBD_REP_ACK",
       "clients may report a failed disconnect", "server: acknowledge NBD_OPT_ABORT (ignoring any data)",
       "NBD_OPT_ABORT answered with NBD_REP_ERR_INVALID", blame=_S),
    _c("info-before-unknown", ("opt-info.7",), "NBD_REP_INFO sent for an export the server then reports unknown",
       "the client gets details of an export that does not exist", "server: send NBD_REP_ERR_UNKNOWN alone",
       "NBD_OPT_GO failed with NBD_REP_ERR_UNKNOWN after 1 NBD_REP_INFO", blame=_S),
    _c("block-size-reqd-despite-request", ("opt-info.9",), "NBD_REP_ERR_BLOCK_SIZE_REQD although the client asked "
       "for NBD_INFO_BLOCK_SIZE", "the client cannot satisfy the server and never connects", "server: accept a "
       "client that asked for block sizes", "NBD_OPT_GO failed with NBD_REP_ERR_BLOCK_SIZE_REQD although it "
       "requested NBD_INFO_BLOCK_SIZE", blame=_S),
    _c("block-size-reqd-without-info", ("opt-info.11",), "NBD_REP_ERR_BLOCK_SIZE_REQD without an NBD_INFO_BLOCK_SIZE "
       "before it", "the client needs another round trip to learn the constraints", "server: send "
       "NBD_INFO_BLOCK_SIZE before the error", "NBD_REP_ERR_BLOCK_SIZE_REQD with no NBD_INFO_BLOCK_SIZE before it",
       blame=_S),
    _c("list-data-not-rejected", ("opt-list.2",), "NBD_OPT_LIST with data was served instead of rejected",
       "a broken client goes unnoticed", "server: answer NBD_REP_ERR_INVALID", "NBD_OPT_LIST with 4 bytes of data "
       "(frame 3) was served", blame=_S),
    _c("structured-reply-data-not-rejected", ("opt-structured-reply.2",), "NBD_OPT_STRUCTURED_REPLY with data was "
       "acknowledged instead of rejected", "a broken client goes unnoticed", "server: answer NBD_REP_ERR_INVALID",
       "NBD_OPT_STRUCTURED_REPLY with 4 bytes of data (frame 3) was acknowledged", blame=_S),
    _c("set-meta-context-not-rejected", ("opt-set-meta-context.2",), "NBD_OPT_SET_META_CONTEXT before structured "
       "replies was served instead of rejected", "the client may send block status the server cannot answer",
       "server: answer NBD_REP_ERR_INVALID", "NBD_OPT_SET_META_CONTEXT before structured replies (frame 3) was "
       "acknowledged", blame=_S),
    _c("payload-not-held", (), "an option or option reply longer than nbdscope holds: its fields were decoded from "
       "the first part only (nbdscope's limit, not the peer's fault)", "checks of the cut part are skipped",
       "none needed; nbdscope holds 16 MiB per option", "NBD_OPT_SET_META_CONTEXT of 20000000 bytes: nbdscope "
       "decoded its first 16777216 bytes", severity="info", blame="nbdscope"),
)

CHECKS = (*GREETING_AND_FLAGS, *CLIENT_OPTIONS, *STRINGS, *SERVER_REPLIES)
