"""Test helpers: run a real rtpproxy process and talk to it over its control socket."""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 10.0
# Media ranges stay below the kernel's ephemeral ports (32768 and up), which the test
# clients' own sockets take: a client port inside a daemon's range makes pairs unbindable.
PORT_BASE = 20000
PORT_TOP = 32600
PORT_BLOCK = 200


def rtpproxy_command() -> list[str]:
    """`[RTPP_BIN]` when set (frozen binary, reference C build), else rtpproxy.py."""
    binary = os.environ.get("RTPP_BIN")
    if binary:
        return [binary]
    return [sys.executable, str(REPO / "rtpproxy.py")]


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = "".join(ch for ch in worker if ch.isdigit())
    return int(digits or 0)


_BLOCKS = (PORT_TOP - PORT_BASE) // PORT_BLOCK
_block_counter = itertools.count((_worker_index() * 37 + os.getpid()) % _BLOCKS)


def next_port_range() -> tuple[int, int]:
    """A distinct media port range per daemon (per process and xdist worker)."""
    block = next(_block_counter) % _BLOCKS
    low = PORT_BASE + block * PORT_BLOCK
    return low, low + PORT_BLOCK - 1


def free_udp_port(host: str = "127.0.0.1", family: int = socket.AF_INET) -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_tcp_port(host: str = "127.0.0.1", family: int = socket.AF_INET) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def short_tmpdir() -> str:
    """A temp dir short enough for AF_UNIX paths (sun_path is ~107 bytes)."""
    return tempfile.mkdtemp(dir="/tmp", prefix="rp")


def has_flag(flags: tuple[str, ...], flag: str) -> bool:
    return any(f == flag or (f.startswith(flag) and not f.startswith("--")) for f in flags)


class UdpClient:
    """A UDP endpoint on 127.0.0.1 (or ::1) for media and control tests."""

    def __init__(self, host: str = "127.0.0.1", timeout: float = 2.0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(timeout)

    @property
    def addr(self) -> tuple:
        return self.sock.getsockname()[:2]

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, data: bytes, addr: tuple) -> None:
        self.sock.sendto(data, addr)

    def recv(self, timeout: float | None = None, size: int = 65536) -> tuple[bytes, tuple]:
        if timeout is not None:
            self.sock.settimeout(timeout)
        return self.sock.recvfrom(size)

    def recv_none(self, timeout: float = 0.3) -> bool:
        """True when nothing arrives within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            self.sock.recvfrom(65536)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UdpClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Proxy:
    """A running daemon. `ctrl` is "udp" or "unix" (how `.cmd()` talks to it)."""

    proc: subprocess.Popen
    args: list[str]
    tmpdir: str
    ctrl: str
    port_min: int
    port_max: int
    udp_addr: tuple | None = None
    unix_path: str | None = None
    stderr_path: str = ""
    daemon_pid: int | None = None  # the forked daemon when started without -f
    foreground: bool = True
    _stderr_file: object = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        """The serving process: a one-file binary's bootloader runs it as its child."""
        if self.daemon_pid is not None:
            return self.daemon_pid
        children = child_pids(self.proc.pid)
        return children[0] if children else self.proc.pid

    def cmd_raw(self, data: bytes, timeout: float = 2.0, retries: int = 3) -> bytes:
        """Send raw bytes over the control socket; the raw reply (cookie included)."""
        if self.ctrl == "udp":
            return self._udp_raw(data, timeout, retries)
        return self._unix_raw(data, timeout)

    def cmd(self, text: str, timeout: float = 2.0, retries: int = 3) -> str:
        """One command; the reply without cookie and trailing LF."""
        if self.ctrl != "udp":
            return self._unix_raw(text.encode(), timeout).decode().rstrip("\n")
        cookie = secrets.token_hex(6).encode()
        reply = self._udp_raw(cookie + b" " + text.encode(), timeout, retries)
        head, _, body = reply.partition(b" ")
        assert head == cookie, f"cookie mismatch: {reply!r}"
        return body.decode().rstrip("\n")

    def _udp_raw(self, data: bytes, timeout: float, retries: int) -> bytes:
        assert self.udp_addr is not None
        family = socket.AF_INET6 if ":" in self.udp_addr[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            for attempt in range(retries):
                s.sendto(data, self.udp_addr)
                try:
                    return s.recv(65536)
                except TimeoutError:
                    if attempt == retries - 1:
                        raise
        raise AssertionError("unreachable")

    def _unix_raw(self, data: bytes, timeout: float) -> bytes:
        assert self.unix_path is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.unix_path)
            s.sendall(data)
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)

    def alive(self) -> bool:
        if self.daemon_pid is not None:
            return pid_alive(self.daemon_pid)
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal the daemon and wait; KILL after `timeout`. Returns the exit status
        (None for a daemonized process, whose status its parent, not us, collects)."""
        if self.daemon_pid is not None:
            return self._stop_daemon(sig, timeout)
        if self.proc.poll() is None:
            try:
                if sig == signal.SIGKILL:
                    # Not through a one-file bootloader: it cannot pass SIGKILL on,
                    # and killed itself it leaves its unpack dir behind.
                    os.kill(self.pid, sig)
                else:
                    self.proc.send_signal(sig)
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_launched(self.proc)
        return self.proc.returncode

    def _adopt_daemon_from_pidfile(self) -> None:
        pidfile = _flag_value(self.args, "-p")
        try:
            pid = int(Path(pidfile).read_text()) if pidfile else None
        except (OSError, ValueError):
            pid = None
        if pid is not None and pid != self.proc.pid:
            if self.proc.poll() is None:
                kill_launched(self.proc, spare=pid)
            self.daemon_pid = pid

    def _stop_daemon(self, sig: int, timeout: float) -> None:
        pid = self.daemon_pid
        assert pid is not None
        if pid_alive(pid):
            os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        return None

    def stderr_text(self) -> str:
        try:
            return Path(self.stderr_path).read_text(errors="replace")
        except OSError:
            return ""

    def cleanup(self) -> None:
        if not self.foreground and self.daemon_pid is None:
            self._adopt_daemon_from_pidfile()
        self.stop()
        if self._stderr_file is not None:
            self._stderr_file.close()  # type: ignore[attr-defined]
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def child_pids(pid: int) -> list[int]:
    """The children of process `pid` (of all its threads), oldest first."""
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for task in sorted(tasks, key=int):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children.extend(int(child) for child in f.read().split())
        except OSError:
            pass
    return children


def kill_launched(proc: subprocess.Popen, spare: int | None = None, timeout: float = 10.0) -> None:
    """SIGKILL a started program, leaving no one-file unpack dir (/tmp/_MEI*) behind.

    A one-file binary's bootloader only removes its unpack dir once its child has
    exited, and cannot do so when it is SIGKILLed itself: so kill the children (all
    but `spare`, a daemon that is stopped otherwise) and let the bootloader exit on
    its own; kill it only if it does not.  Without children (rtpproxy.py) this is
    a plain SIGKILL.
    """
    if proc.poll() is not None:
        return
    children = [pid for pid in child_pids(proc.pid) if pid != spare]
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if children:
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait()


def pid_alive(pid: int) -> bool:
    """True for a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_daemonized(proxy: Proxy, timeout: float = READY_TIMEOUT_S) -> str | None:
    """For a start without -f: the parent must exit 0; then read the pidfile."""
    try:
        status = proxy.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return "the daemonizing parent did not exit"
    if status != 0:
        return f"the daemonizing parent exited with {status}"
    pidfile = _flag_value(proxy.args, "-p")
    if pidfile:
        try:
            proxy.daemon_pid = int(Path(pidfile).read_text())
        except (OSError, ValueError) as exc:
            return f"no pid in {pidfile}: {exc}"
    return None


def _flag_value(args: list[str], flag: str) -> str | None:
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag) and len(arg) > len(flag) and not arg.startswith("--"):
            value = arg[len(flag) :]
    return value


def wait_ready(proxy: Proxy, timeout: float = READY_TIMEOUT_S) -> str | None:
    """Wait until `V` is answered; None on success, else a description of the failure."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if (proxy.foreground or proxy.daemon_pid is not None) and not proxy.alive():
            return f"exited with {proxy.proc.poll()}"
        try:
            if proxy.cmd("V", timeout=0.3, retries=1) == "20040107":
                return None
        except (OSError, AssertionError) as exc:
            last = repr(exc)
        time.sleep(0.05)
    return f"no V reply within {timeout}s ({last})"


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement sum of data (0xFFFF over a header holding a valid checksum)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def start_proxy(
    *flags: str,
    ctrl: str = "udp",
    ports: tuple[int, int] | None = None,
    foreground: bool = True,
    wait: bool = True,
    extra_env: dict | None = None,
    command: list[str] | None = None,
    wrap: tuple[str, ...] = (),
    terminal: int | None = None,
) -> Proxy:
    """Start a daemon with sane test defaults (see tests/conftest.py `rtpproxy`).

    `command` replaces `rtpproxy_command()` (e.g. a copy of the executable); `wrap`: a
    command that runs the daemon (e.g. `ip netns exec NAME`); `terminal`: a pseudo-
    terminal's slave, the daemon's stdin, stdout and controlling terminal, whose
    foreground job it is (as if typed at a shell prompt)."""
    import pytest

    tmpdir = short_tmpdir()
    args = list(flags)
    udp_addr = unix_path = None
    if not has_flag(flags, "-s"):
        if ctrl == "udp":
            udp_addr = ("127.0.0.1", free_udp_port())
            args += ["-s", f"udp:{udp_addr[0]}:{udp_addr[1]}"]
        else:
            unix_path = os.path.join(tmpdir, "ctl.sock")
            args += ["-s", f"unix:{unix_path}"]
    else:
        udp_addr, unix_path = _ctrl_from_flags(flags)
    port_min, port_max = ports or next_port_range()
    if not has_flag(flags, "-m"):
        args += ["-m", str(port_min), "-M", str(port_max)]
    if foreground and not has_flag(flags, "-f"):
        args.append("-f")
    if not has_flag(flags, "-F") and not has_flag(flags, "-u"):
        args.append("-F")
    if not has_flag(flags, "-p"):
        args += ["-p", os.path.join(tmpdir, "pid")]
    if not has_flag(flags, "-d"):
        args += ["-d", "INFO"]
    stderr_path = os.path.join(tmpdir, "stderr")
    stderr_file = open(stderr_path, "wb")  # noqa: SIM115
    env = dict(os.environ, **(extra_env or {}))
    proc = subprocess.Popen(
        list(wrap) + (command or rtpproxy_command()) + args,
        stdin=subprocess.DEVNULL if terminal is None else terminal,
        stdout=subprocess.DEVNULL if terminal is None else terminal,
        stderr=stderr_file,
        env=env,
        start_new_session=True,
        preexec_fn=None if terminal is None else _take_terminal,
    )
    proxy = Proxy(
        proc=proc,
        args=args,
        tmpdir=tmpdir,
        ctrl="udp" if udp_addr else "unix",
        port_min=port_min,
        port_max=port_max,
        udp_addr=udp_addr,
        unix_path=unix_path,
        stderr_path=stderr_path,
        foreground=foreground,
        _stderr_file=stderr_file,
    )
    if wait:
        failure = None if foreground else wait_daemonized(proxy)
        failure = failure or wait_ready(proxy)
        if failure is not None:
            proxy.cleanup()
            pytest.fail(f"rtpproxy {args} did not start: {failure}\n{proxy.stderr_text()}")
    return proxy


def _take_terminal() -> None:
    """In the child, a session leader: its stdin becomes its controlling terminal."""
    import fcntl
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _ctrl_from_flags(flags: tuple[str, ...]) -> tuple[tuple | None, str | None]:
    """The first udp: or unix: control socket among explicit -s flags."""
    values = [flags[i + 1] for i, f in enumerate(flags[:-1]) if f == "-s"]
    values += [f[2:] for f in flags if f.startswith("-s") and len(f) > 2]
    for value in values:
        if value.startswith("udp:"):
            host, _, port = value[4:].rpartition(":")
            return (host, int(port)), None
        if value.startswith("udp6:"):
            host, _, port = value[5:].rpartition(":")
            return (host, int(port)), None
    for value in values:
        if value.startswith("unix:"):
            return None, value[5:]
        if ":" not in value:
            return None, value
    return None, None
