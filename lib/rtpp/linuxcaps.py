"""Process capabilities: keeping one across the switch to an unprivileged user (-u).

The standard library has no capset(2); this calls glibc's wrapper through ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

CAP_NET_ADMIN = 12
PR_SET_KEEPCAPS = 8
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def keep_caps(on: bool) -> None:
    """PR_SET_KEEPCAPS: whether setuid() away from root keeps the permitted set."""
    if _libc().prctl(PR_SET_KEEPCAPS, int(on), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def set_only(cap: int) -> None:
    """Make `cap` the process's only permitted and effective capability."""
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    data[cap // 32].effective = data[cap // 32].permitted = 1 << (cap % 32)
    if _libc().capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
