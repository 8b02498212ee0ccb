"""nbdscope: decode NBD traffic and judge it against the protocol specification."""

__version__ = "0.1.0"
