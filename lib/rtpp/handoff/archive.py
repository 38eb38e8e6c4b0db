"""A one-file build reads its modules from its own executable as it needs them, by
path: once a package upgrade has put a new file at that path, a module imported late
would come from the wrong file (and fail to decompress). `pin_archive` makes this
process read them from the file it was started from, through a descriptor of
/proc/self/exe, whatever happens at the path later.
"""

from __future__ import annotations

import marshal
import os
import sys
import zlib

_PYZ_MAGIC = b"PYZ\0"
_ITEM_MODULE, _ITEM_PKG, _ITEM_NSPKG = 0, 1, 3


def pin_archive() -> bool:
    """True when the frozen module archive now reads from our own executable's inode."""
    importers = sys.modules.get("pyimod02_importers")
    archive = getattr(importers, "pyz_archive", None)
    if archive is None or getattr(archive, "_rtpp_pinned", False):
        return False
    try:
        fd = os.open("/proc/self/exe", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    start = archive._start_offset
    if os.pread(fd, len(_PYZ_MAGIC), start) != _PYZ_MAGIC:
        os.close(fd)
        return False
    toc = archive.toc

    def extract(name: str, raw: bool = False):
        entry = toc.get(name)
        if entry is None:
            raise KeyError(f"No entry named {name!r} found in the archive!")
        typecode, offset, length = entry
        if typecode == _ITEM_NSPKG:
            return None
        obj = zlib.decompress(os.pread(fd, length, start + offset))
        if typecode in (_ITEM_MODULE, _ITEM_PKG) and not raw:
            obj = marshal.loads(obj)
        return obj

    archive.extract = extract
    archive._rtpp_pinned = True
    return True
