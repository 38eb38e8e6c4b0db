"""Numeric error codes of the control protocol (`E<n>` replies), and the one table that
turns the media plane's errors (media/errors.py) into them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum, IntEnum

from rtpp.media.errors import Draining, MediaError, NoPorts, Overloaded


class ECode(IntEnum):
    CMDUNKN = 0
    PARSE_NARGS = 1
    PARSE_MODS = 2
    PARSE_SUBC = 3
    PARSE_1 = 5
    PARSE_2 = 6
    PARSE_3 = 7
    PARSE_4 = 8
    PARSE_5 = 9
    PARSE_10 = 10
    PARSE_11 = 11
    PARSE_12 = 12
    PARSE_13 = 13
    PARSE_14 = 14
    PARSE_15 = 15
    PARSE_16 = 16
    PARSE_6 = 17
    PARSE_7 = 18
    PARSE_8 = 19
    RTOOBIG_1 = 25
    RTOOBIG_2 = 26
    INVLARG_1 = 31
    INVLARG_2 = 32
    INVLARG_5 = 35
    INVLARG_6 = 36
    INVLARG_7 = 37
    SESUNKN = 50
    PLRFAIL = 60
    QRYFAIL = 62
    CPYFAIL = 65
    STSFAIL = 68
    LSTFAIL_1 = 71
    LSTFAIL_2 = 72
    NSOFF = 75
    NOMEM_1 = 81
    NOMEM_2 = 82
    NOMEM_3 = 83
    NOMEM_5 = 85
    NOMEM_6 = 86
    NOMEM_8 = 88
    NOMEM_9 = 89
    OVERLOAD = 98
    SLOWSHTDN = 99


class CommandError(Exception):
    """A command failed; turned into an `E<n>` reply in one place (the dispatcher)."""

    def __init__(self, ecode: ECode) -> None:
        super().__init__(f"E{int(ecode)}")
        self.ecode = ecode


class Step(Enum):
    """What a command was doing when the media plane refused (the code depends on it)."""

    ANY = "any"
    NEW_SESSION = "new session"  # U creating a session
    LEG = "leg"  # ports for a leg of an existing session
    COPY = "copy"  # C to a remote listener


#: The reply to a media failure: (error, step) -> code; Step.ANY applies at every step.
MEDIA_ECODES: dict[tuple[type[MediaError], Step], ECode] = {
    (Draining, Step.ANY): ECode.SLOWSHTDN,
    (Overloaded, Step.ANY): ECode.OVERLOAD,
    (NoPorts, Step.NEW_SESSION): ECode.LSTFAIL_2,
    (NoPorts, Step.LEG): ECode.LSTFAIL_1,
    (NoPorts, Step.COPY): ECode.CPYFAIL,
}


def media_ecode(exc: MediaError, step: Step = Step.ANY) -> ECode | None:
    for cls in type(exc).__mro__:
        code = MEDIA_ECODES.get((cls, step)) or MEDIA_ECODES.get((cls, Step.ANY))
        if code is not None:
            return code
    return None


@contextmanager
def media_step(step: Step) -> Iterator[None]:
    """Within: a media error becomes the CommandError that MEDIA_ECODES gives for `step`."""
    try:
        yield
    except MediaError as exc:
        code = media_ecode(exc, step)
        if code is None:
            raise
        raise CommandError(code) from exc
