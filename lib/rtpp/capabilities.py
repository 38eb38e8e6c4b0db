"""Protocol capability datestamps answered by `VF` and listed by `-v`."""

from __future__ import annotations

BASE_VERSION = "20040107"
NOTIFY_CAPABILITY = "20081224"

#: (date, description) in the classic order; the first row is the base version.
CAPABILITIES: tuple[tuple[str, str], ...] = (
    ("20040107", "Basic RTP proxy functionality"),
    ("20050322", "Support for multiple RTP streams and MOH"),
    ("20060704", "Support for extra parameter in the V command"),
    ("20071116", "Support for RTP re-packetization"),
    ("20071218", "Support for forking (copying) RTP stream"),
    ("20080403", "Support for RTP statistics querying"),
    ("20081102", "Support for setting codecs in the update/lookup command"),
    ("20081224", "Support for session timeout notifications"),
    ("20090810", "Support for automatic bridging"),
    ("20140323", "Support for tracking/reporting load"),
    ("20140617", "Support for anchoring session connect time"),
    ("20141004", "Support for extendable performance counters"),
    ("20150330", 'Support for allocating a new port ("Un"/"Ln" commands)'),
    ("20150420", "Support for SEQ tracking and new rtpa_ counters; Q command extended"),
    ("20150617", "Support for the wildcard %%CC_SELF%% as a disconnect notify target"),
    ("20191015", "Support for the && sub-command specifier"),
    ("20200226", "Support for the N command to stop recording"),
    ("20230205", 'Support for "rtpa_nlost" counter'),
    ("20230314", 'Support for "fusing" G and D commands'),
    ("20230424", 'Support for "longest_ipi", "rtpa_jlast", "rtpa_jmax" and "rtpa_javg" counters'),
    ("20250523", 'Support for the "p" modifier of the C command'),
    ("20251015", 'Support for the "ttl=" and "tos=" parameters of the S sub-command'),
    ("20260306", "Support for address labels in the U and L commands"),
    ("20260308", 'Support for two-leg setup with "U ... && L ..."'),
    ("20260309", 'Support for copying both streams with "U ... && C ..."'),
)

_DATES = frozenset(date for date, _ in CAPABILITIES)


def supported(date: str, notify_configured: bool) -> bool:
    """The `VF <date>` answer: timeout notifications count only when `-n` is configured."""
    if date == NOTIFY_CAPABILITY and not notify_configured:
        return False
    return date in _DATES
