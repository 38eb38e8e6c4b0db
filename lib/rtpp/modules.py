"""The classic's loadable modules (`--dso`, the `modules` section of `--config`).

None can be loaded here. Starting without a module an operator asked for would drop its
function without a word, so every request for one refuses the start, naming the module
and, where this implementation does the same job itself, the option that does it.
"""

from __future__ import annotations

import os

from rtpp import ucl

#: Classic module name -> (what it does, the option that replaces it or None).
CLASSIC_MODULES: dict[str, tuple[str, str | None]] = {
    "acct_csv": ("per-call accounting records", "--acct"),
    "acct_rtcp_hep": ("RTCP export to a HEP collector", None),
    "catch_dtmf": ("RFC 4733 DTMF event detection", None),
    "dtls_gw": ("the DTLS-SRTP gateway", None),
    "ice_lite": ("ICE-lite", None),
}


class ModuleError(Exception):
    """A module request that refuses the start; `message` is the one line to print."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def module_name(path: str) -> str:
    """`../modules/acct_csv/.libs/rtpp_acct_csv_debug.so` -> `acct_csv`."""
    name = os.path.basename(path)
    name = name.removesuffix(".so").removeprefix("rtpp_").removesuffix("_debug")
    return name or path


def refusal(name: str) -> str:
    """Why module `name` cannot be had, and what to use instead."""
    known = CLASSIC_MODULES.get(name)
    reason = f'module "{name}" cannot be loaded: loadable modules are not supported'
    if known is None:
        return reason
    function, option = known
    if option is None:
        return f"{reason}, and {function} is not available"
    return f"{reason}; {function} are built in: use {option} instead"


def check_dso(path: str) -> None:
    """`--dso PATH`: always refused; a missing file or an empty path says so first."""
    if not path:
        raise ModuleError("--dso: empty module path")
    name = module_name(path)
    if not os.path.exists(path) and name not in CLASSIC_MODULES:
        raise ModuleError(f"realpath: {path}: {os.strerror(2)}")
    raise ModuleError(f"--dso {path}: {refusal(name)}")


def check_config(path: str) -> None:
    """`--config PATH`: unreadable or unparsable refuses the start, and so does a
    `modules` section naming any module; every other section is ignored, as the
    classic does."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ModuleError(f"rtpp_cfile_process: open failed: {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
        modules = [m for sect in ucl.section(ucl.parse(text), "modules") for m in sect]
    except UnicodeDecodeError:
        raise ModuleError(f"--config {path}: not a UTF-8 text file") from None
    except ucl.UclError as exc:
        where = f"line {exc.line}: " if exc.line else ""
        raise ModuleError(f"--config {path}: {where}{exc.reason}") from None
    for name, _ in modules:
        raise ModuleError(f"--config {path}: {refusal(name)}")
