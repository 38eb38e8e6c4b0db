"""The next process: which file to start, with what, and how to stop it if it fails.

The executable is started again from its path, so after an upgrade the new file on
disk runs. A one-file build runs our code in a child of its bootloader: the path is
`sys.executable` (the bootloader's file), and the new bootloader must unpack itself
afresh rather than reuse this process's unpack directory
(PYINSTALLER_RESET_ENVIRONMENT). Run from source it is the interpreter and the
absolute path of the script.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

#: The environment variable naming the inherited channel descriptor.
CHANNEL_ENV = "RTPP_HANDOFF_FD"
#: Seconds the successor gets to stop after SIGTERM before it is killed.
STOP_GRACE_S = 2.0


def frozen_onefile() -> bool:
    """True in a one-file build, where a bootloader process is our parent."""
    meipass = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or meipass is None:
        return False
    return os.path.dirname(os.path.abspath(sys.executable)) != os.path.abspath(meipass)


def service_pid() -> int:
    """The pid a service manager should watch: the bootloader of a one-file build."""
    return os.getppid() if frozen_onefile() else os.getpid()


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Executable:
    """How this process was started, to start the same program again."""

    path: str
    argv: tuple[str, ...]  # argv[0] included

    @classmethod
    def of_this_process(cls, argv: list[str]) -> Executable:
        """Call at start-up, before any chdir: a relative script path is resolved now."""
        if getattr(sys, "frozen", False):
            return cls(sys.executable, tuple(argv))
        script = os.path.abspath(argv[0]) if argv else ""
        return cls(sys.executable, (sys.executable, script, *argv[1:]))

    @property
    def program(self) -> str:
        """What an operator knows as the executable (the script when run from source)."""
        return self.argv[1] if not getattr(sys, "frozen", False) else self.path

    def spawn(self, channel_fd: int) -> subprocess.Popen:
        """Start it with `channel_fd` inherited; its own process group (see `stop`)."""
        env = dict(os.environ)
        env[CHANNEL_ENV] = str(channel_fd)
        env["PYINSTALLER_RESET_ENVIRONMENT"] = "1"
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(name, None)
        return subprocess.Popen(
            list(self.argv),
            executable=self.path,
            env=env,
            pass_fds=(channel_fd,),
            close_fds=True,
            process_group=0,
        )


def stop(proc: subprocess.Popen) -> None:
    """End a successor that failed (its bootloader and the child in its group)."""
    if proc.poll() is not None:
        return
    if frozen_onefile():
        _wait_unpacked(proc)
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
    _signal_group(proc.pid, signal.SIGKILL)  # a child its bootloader left behind


def _wait_unpacked(proc: subprocess.Popen) -> None:
    """Until a one-file bootloader has started its child (it has unpacked itself), for
    at most STOP_GRACE_S: one stopped earlier leaves its unpack directory behind."""
    deadline = time.monotonic() + STOP_GRACE_S
    while proc.poll() is None and time.monotonic() < deadline:
        if any(_read(path).strip() for path in glob.glob(f"/proc/{proc.pid}/task/*/children")):
            return
        time.sleep(0.02)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def describe_exit(status: int | None) -> str:
    if status is None:
        return "still running"
    if status < 0:
        return f"killed by signal {-status}"
    return f"exited with status {status}"
