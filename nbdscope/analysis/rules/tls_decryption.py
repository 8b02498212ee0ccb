"""Decryption with the peers' key log (--tls-keylog) that stopped part-way: the capture's finding.

A session whose key log has no secrets for it is only marked "TLS, no key" (nothing is wrong with the
capture or the peers); one whose records opened and then one failed authentication, or whose TLS bytes
the capture lost, is reported here, since nothing after that point is decoded or judged."""

from __future__ import annotations

from nbdscope.analysis.anomaly import Check, RuleInfo
from nbdscope.analysis.rules.base import Rule
from nbdscope.analysis.session import Session
from nbdscope.decoder import events as ev


class TlsDecryption(Rule):
    INFO = RuleInfo("tls-decryption", "warning", "capture", "(capture completeness)",
                    "decryption with the key log stopped part-way through a session")
    CHECKS = (
        Check("undecryptable", severity="warning",
              summary="a TLS record failed authentication after others had opened, or the capture lost bytes of "
                      "TLS records",
              consequence="nothing after that point of the session is decoded or judged (it is counted as "
                          "encrypted bytes); a damaged capture is the likely cause, not either peer",
              fix="capture without drops (tcpdump -s 0, a larger -B); check that the capture and the key log "
                  "belong to the same run",
              example="TLS decryption stopped: record 7 under SERVER_TRAFFIC_SECRET_0 failed authentication at "
                      "frame 40 (...); the rest of the session is not decoded"),
    )
    EVENTS = (ev.TlsData,)
    JUDGES_LOSSY = True

    def message(self, session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.TlsData) and event.decryption == "undecryptable":
            self.flag(session, event, f"TLS decryption stopped: {event.detail}; the rest of the session is not "
                      "decoded", check="undecryptable")
