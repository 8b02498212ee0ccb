"""Magic numbers of the NBD protocol (spec sections "Handshake", "Transmission",
"Reserved Magic values")."""

from __future__ import annotations

NBDMAGIC = 0x4E42444D41474943  # "NBDMAGIC": first 8 bytes from every server
IHAVEOPT = 0x49484156454F5054  # "IHAVEOPT": newstyle server greeting and option requests
CLISERV_MAGIC = 0x00420281861253  # oldstyle greeting, after NBDMAGIC
OPTION_REPLY_MAGIC = 0x3E889045565A9  # every option reply
REQUEST_MAGIC = 0x25609513  # compact transmission request
EXTENDED_REQUEST_MAGIC = 0x21E41C71  # request once extended headers are negotiated
SIMPLE_REPLY_MAGIC = 0x67446698  # simple reply
STRUCTURED_REPLY_MAGIC = 0x668E33EF  # structured reply chunk
EXTENDED_REPLY_MAGIC = 0x6E8A278C  # extended reply chunk

NBDMAGIC_BYTES = NBDMAGIC.to_bytes(8, "big")
IHAVEOPT_BYTES = IHAVEOPT.to_bytes(8, "big")
CLISERV_MAGIC_BYTES = CLISERV_MAGIC.to_bytes(8, "big")
OPTION_REPLY_MAGIC_BYTES = OPTION_REPLY_MAGIC.to_bytes(8, "big")
REQUEST_MAGIC_BYTES = REQUEST_MAGIC.to_bytes(4, "big")
EXTENDED_REQUEST_MAGIC_BYTES = EXTENDED_REQUEST_MAGIC.to_bytes(4, "big")
SIMPLE_REPLY_MAGIC_BYTES = SIMPLE_REPLY_MAGIC.to_bytes(4, "big")
STRUCTURED_REPLY_MAGIC_BYTES = STRUCTURED_REPLY_MAGIC.to_bytes(4, "big")
EXTENDED_REPLY_MAGIC_BYTES = EXTENDED_REPLY_MAGIC.to_bytes(4, "big")

MAGIC_NAMES: dict[int, str] = {
    NBDMAGIC: "NBDMAGIC",
    IHAVEOPT: "IHAVEOPT",
    CLISERV_MAGIC: "NBD_CLISERV_MAGIC",
    OPTION_REPLY_MAGIC: "NBD_REP_MAGIC",
    REQUEST_MAGIC: "NBD_REQUEST_MAGIC",
    EXTENDED_REQUEST_MAGIC: "NBD_EXTENDED_REQUEST_MAGIC",
    SIMPLE_REPLY_MAGIC: "NBD_SIMPLE_REPLY_MAGIC",
    STRUCTURED_REPLY_MAGIC: "NBD_STRUCTURED_REPLY_MAGIC",
    EXTENDED_REPLY_MAGIC: "NBD_EXTENDED_REPLY_MAGIC",
}

DEFAULT_PORT = 10809
OLDSTYLE_ZEROES = 124  # reserved zero bytes ending the oldstyle greeting and EXPORT_NAME reply
