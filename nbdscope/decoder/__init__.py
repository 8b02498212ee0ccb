"""Sans-IO NBD decoder: bytes in, immutable events out."""

from nbdscope.decoder.connection import Connection

__all__ = ["Connection"]
