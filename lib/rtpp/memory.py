"""Handing freed heap memory back to the system after a burst (glibc's malloc_trim)."""

from __future__ import annotations

import ctypes


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to call
        return None


_trim = _malloc_trim()


def trim() -> None:
    """Return the free memory at the top and in the holes of the heap to the system."""
    if _trim is not None:
        _trim(0)
