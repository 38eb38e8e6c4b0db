"""Print the libc6 dependency that a one-file PyInstaller executable needs.

    libc-depends.py dist/rtpproxy          ->  libc6 (>= 2.36)

dh_shlibdeps only sees the bootloader (the ELF part of the executable), whose
needs are modest; the libraries and extension modules unpacked at run time
(libpython first) are built against the build machine's glibc.  This reads them
out of the embedded archive and returns the highest GLIBC_x.y symbol version
that any of them, or the bootloader, requires (`objdump -p`, "Version
References").  Everything else those libraries link to is bundled too, except
glibc's own libraries (libc, libm, libpthread, libdl, librt, the dynamic
loader), which all come from the libc6 package.

Run with the build virtualenv's Python (it needs PyInstaller).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from PyInstaller.archive.readers import CArchiveReader

# The archive's typecode for binaries (shared libraries and extension modules).
BINARY = "b"
GLIBC_VERSION = re.compile(r"\bGLIBC_(\d+(?:\.\d+)+)\b")


def required_glibc(path: Path) -> set[tuple[int, ...]]:
    """The GLIBC_* versions that the ELF file `path` requires."""
    out = subprocess.run(
        ["objdump", "-p", str(path)], capture_output=True, text=True, check=True
    ).stdout
    _, _, refs = out.partition("Version References:")
    return {tuple(int(n) for n in v.split(".")) for v in GLIBC_VERSION.findall(refs)}


def bundled_requirements(executable: Path) -> dict[str, tuple[int, ...]]:
    """Name -> highest GLIBC version required, for the bootloader and each bundled binary."""
    archive = CArchiveReader(str(executable))
    result = {}
    found = required_glibc(executable)
    if found:
        result[executable.name] = max(found)
    with tempfile.TemporaryDirectory(prefix="libc-depends-") as tmp:
        for name, entry in archive.toc.items():
            if entry[-1] != BINARY:
                continue
            path = Path(tmp) / name.replace("/", "_")
            path.write_bytes(archive.extract(name))
            found = required_glibc(path)
            if found:
                result[name] = max(found)
            path.unlink()
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("executable", type=Path)
    parser.add_argument("--package", default="libc6", help="glibc's package name (libc6)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list each binary")
    args = parser.parse_args(argv)
    needs = bundled_requirements(args.executable)
    if not needs:
        print(f"{args.executable}: no GLIBC symbol versions found", file=sys.stderr)
        return 1
    if args.verbose:
        for name, version in sorted(needs.items(), key=lambda item: (item[1], item[0])):
            print(f"GLIBC_{'.'.join(map(str, version))} {name}", file=sys.stderr)
    highest = max(needs.values())
    print(f"{args.package} (>= {'.'.join(map(str, highest))})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
