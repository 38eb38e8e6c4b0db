"""The state document a process hands to its successor, and how values go into it.

The document is JSON: `{"format": FORMAT, "sections": {...}}`. Descriptors travel
beside it (SCM_RIGHTS) and are named in it by their index in the message (`FdTable`).
A successor that reads an older format may convert it; one that finds a newer format
than it knows refuses the handoff before the old process stops serving (the version
is part of the HELLO exchange, see `protocol`).

Values that JSON has no type for are tagged one-key objects: `{"b": base64}` bytes,
`{"ba": base64}` bytearray, `{"t": [...]}` tuple, `{"a": [typecode, base64]}` array.
"""

from __future__ import annotations

import array
import base64
from collections.abc import Iterable
from typing import Any

#: Written by this version; bump it when the meaning of a field changes.
FORMAT = 1
#: The oldest format this version can take over from.
OLDEST_READABLE = 1


class StateError(Exception):
    """The document cannot be taken over (format, missing part, bad value)."""


class FdTable:
    """Descriptors to send, each named by its index."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def add(self, fileno: int) -> int:
        self.fds.append(fileno)
        return len(self.fds) - 1


class FdSource:
    """The receiving side: descriptors by index; each may be taken once."""

    def __init__(self, fds: list[int]) -> None:
        self.fds = list(fds)
        self.taken = [False] * len(fds)

    def take(self, index: int) -> int:
        if not 0 <= index < len(self.fds) or self.taken[index]:
            raise StateError(f"descriptor {index} missing or used twice")
        self.taken[index] = True
        return self.fds[index]

    def untaken(self) -> list[int]:
        return [fd for fd, used in zip(self.fds, self.taken, strict=True) if not used]


def encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return {"b": base64.b64encode(value).decode()}
    if isinstance(value, bytearray):
        return {"ba": base64.b64encode(value).decode()}
    if isinstance(value, tuple):
        return {"t": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, array.array):
        return {"a": [value.typecode, base64.b64encode(value.tobytes()).decode()]}
    if isinstance(value, dict):
        return {"d": [[encode(k), encode(v)] for k, v in value.items()]}
    raise TypeError(f"no state encoding for {type(value).__name__}")


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        raise StateError(f"bad tagged value {value!r:.80}")
    ((tag, inner),) = value.items()
    if tag == "b":
        return base64.b64decode(inner)
    if tag == "ba":
        return bytearray(base64.b64decode(inner))
    if tag == "t":
        return tuple(decode(v) for v in inner)
    if tag == "a":
        out = array.array(inner[0])
        out.frombytes(base64.b64decode(inner[1]))
        return out
    if tag == "d":
        return {decode(k): decode(v) for k, v in inner}
    raise StateError(f"unknown value tag {tag!r}")


def dump_fields(obj: Any, names: Iterable[str]) -> dict:
    return {name: encode(getattr(obj, name)) for name in names}


def load_fields(obj: Any, doc: dict, names: Iterable[str]) -> None:
    """Set each of `names` that `doc` holds; the others keep their defaults."""
    for name in names:
        if name in doc:
            setattr(obj, name, decode(doc[name]))


def slot_names(cls: type) -> list[str]:
    """Every __slots__ entry of `cls` and its bases."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        slots = klass.__dict__.get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    return [n for n in names if n not in ("__weakref__", "__dict__")]


def document(sections: dict) -> dict:
    return {"format": FORMAT, "sections": sections}


def sections_of(doc: dict) -> dict:
    fmt = doc.get("format")
    if not isinstance(fmt, int) or not OLDEST_READABLE <= fmt <= FORMAT:
        raise StateError(f"state format {fmt!r} (this version reads {OLDEST_READABLE}-{FORMAT})")
    sections = doc.get("sections")
    if not isinstance(sections, dict):
        raise StateError("state document without sections")
    return sections
