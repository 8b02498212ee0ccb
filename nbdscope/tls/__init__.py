"""Decrypting the TLS of NBD sessions with the peers' key log (sans-IO): the key log (``keylog``), TLS records
(``records``), what the hellos say (``hello``), the TLS 1.3 and 1.2 key schedules (``schedule``) and one
session's decryptor for both directions (``session``). The decoder drives it (``decoder/decrypted.py``)."""
