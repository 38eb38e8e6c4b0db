"""Why the media plane refused a request. The command layer maps each to an `E<code>`
(commands/errors.py, MEDIA_ECODES); the media plane itself knows no protocol codes."""

from __future__ import annotations


class MediaError(Exception):
    """A media operation could not be done; nothing was changed."""


class Draining(MediaError):
    """Graceful shutdown: no new sessions."""


class Overloaded(MediaError):
    """Overload protection (--overload_prot) refuses new sessions."""


class NoPorts(MediaError):
    """No media port pair could be had."""


class PortsExhausted(NoPorts):
    """No free pair could be bound in the range."""


class DescriptorsExhausted(NoPorts):
    """The descriptor reserve kept for the control sockets was reached (-L)."""


class BindFailed(NoPorts):
    """The local address could not be bound (or routed to)."""
