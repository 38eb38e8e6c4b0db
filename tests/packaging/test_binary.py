"""The one-file executable dist/rtpproxy: tools by program name, pidfile, signals, -u.

One-file specifics under test: the daemon runs in a child of the bootloader (the
pidfile must name that child, and TERM to it must stop everything), and modules
must all be imported before the daemon detaches or drops privileges, because the
unpacked archive is deleted with the bootloader or unreadable to the new user.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PyInstaller.archive.readers import CArchiveReader

from helpers import kill_launched, start_proxy

REPO = Path(__file__).resolve().parents[2]
BINARY = REPO / "dist" / "rtpproxy"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0

pytestmark = pytest.mark.packaging


@pytest.fixture(scope="session")
def frozen() -> Path:
    """dist/rtpproxy as of the current sources: `make binary` (a no-op when up to date)."""
    subprocess.run(["make", "-C", str(REPO), "binary"], check=True, timeout=900)
    assert os.access(BINARY, os.X_OK)
    return BINARY


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short temp dir (unix socket paths must fit in 107 bytes), world-traversable."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="rtpp-pkg-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def version() -> str:
    text = (REPO / "lib" / "rtpp" / "__init__.py").read_text()
    match = re.search(r'__version__ = "([^"]+)"', text)
    assert match
    return match.group(1)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def media_range() -> tuple[int, int]:
    low = 40000 + (os.getpid() % 200) * 100
    return low, low + 99


def udp_command(port: int, command: str, timeout: float = 1.0, tries: int = 3) -> str:
    """Send `command` with a cookie to udp:127.0.0.1:port; the reply without cookie and LF."""
    cookie = f"pk{os.getpid()}_{time.monotonic_ns()}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        for _ in range(tries):
            s.sendto(f"{cookie} {command}".encode(), ("127.0.0.1", port))
            try:
                data, _ = s.recvfrom(65536)
            except TimeoutError:
                continue
            text = data.decode()
            assert text.startswith(cookie + " "), text
            return text[len(cookie) + 1 :].rstrip("\n")
    raise TimeoutError(f"no reply to {command!r} on udp port {port}")


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"exited {proc.returncode} while waiting for {what}:\n{out}\n{err}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text()
    except OSError:
        return None
    return int(text) if text.endswith("\n") and text.strip().isdigit() else None


def proc_uid_gid(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
    gid = int(re.search(r"^Gid:\s+(\d+)", status, re.M).group(1))
    return uid, gid


def ready(port: int):
    def check():
        try:
            return udp_command(port, "V", timeout=0.3, tries=1) == "20040107"
        except (TimeoutError, ConnectionRefusedError):
            return False

    return check


def exercise_commands(port: int) -> None:
    """Commands whose handlers and helpers may be imported lazily: all must answer."""
    assert udp_command(port, "VF 20050322") == "1"
    offer = udp_command(port, "U cid1 127.0.0.1 7000 ftag1")
    assert offer.split()[0].isdigit() and int(offer.split()[0]) > 0, offer
    answer = udp_command(port, "L cid1 127.0.0.1 7002 ftag1 ttag1")
    assert answer.split()[0].isdigit() and int(answer.split()[0]) > 0, answer
    assert len(udp_command(port, "Q cid1 ftag1 ttag1").split()) == 5
    assert udp_command(port, "Gv nsess_created pps_in").startswith("nsess_created=1 pps_in=")
    assert udp_command(port, "R cid1 ftag1 ttag1") == "E50"  # no -r
    assert udp_command(port, "P cid1 /nonexistent/prompt 0 ftag1 ttag1") == "E60"
    assert udp_command(port, "S cid1 ftag1 ttag1") == "0"
    assert udp_command(port, "N cid1 ftag1 ttag1") == "E50"
    assert udp_command(port, "U cid1 127.0.0.1 7000 ftag1 ttag1 && L 127.0.0.1 7002").count("&&")
    assert udp_command(port, "D cid1 ftag1 ttag1") == "0"
    assert udp_command(port, "Il").startswith("sessions created: ")
    assert udp_command(port, "X") == "0"
    assert udp_command(port, "Y") == "E0"


def daemon_args(port: int, *extra: str) -> list[str]:
    low, high = media_range()
    return ["-F", "-s", f"udp:127.0.0.1:{port}", "-l", "127.0.0.1"] + [
        "-m",
        str(low),
        "-M",
        str(high),
        *extra,
    ]


def stop_quietly(proc: subprocess.Popen) -> None:
    """Kill what is left of a test daemon: its bootloader's child first, so that the
    bootloader removes its unpack dir and exits, then anything left in the session."""
    kill_launched(proc, timeout=STOP_TIMEOUT_S)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def bundled_names(executable: Path) -> list[str]:
    """Names of the shared libraries and extension modules in the embedded archive."""
    return [name for name, entry in CArchiveReader(str(executable)).toc.items() if entry[-1] == "b"]


# ------------------------------------------------------------------ tests


def test_version_output(frozen: Path) -> None:
    proc = subprocess.run([str(frozen), "-V"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(rf"{re.escape(version())}\.\S+\n", proc.stdout), proc.stdout


def test_capabilities_output(frozen: Path) -> None:
    proc = subprocess.run([str(frozen), "-v"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "Basic version: 20040107"
    assert lines[1:] and all(re.fullmatch(r"Extension \d{8}: \S.*", line) for line in lines[1:])
    assert "Extension 20050322: " in proc.stdout


def test_runs_as_makeann_through_symlink(frozen: Path, workdir: Path) -> None:
    link = workdir / "makeann"
    link.symlink_to(frozen)
    usage = subprocess.run([str(link)], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 1
    assert "makeann" in usage.stderr + usage.stdout
    samples = (workdir / "tone.raw").resolve()
    samples.write_bytes(b"\x00\x10\x00\xf0" * 400)  # 800 samples of s16le
    done = subprocess.run(
        [str(link), str(samples), str(workdir / "tone")], capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert (workdir / "tone.0").stat().st_size == 800
    assert (workdir / "tone.8").stat().st_size == 800


def test_runs_as_extractaudio_through_symlink(frozen: Path, workdir: Path) -> None:
    link = workdir / "extractaudio"
    link.symlink_to(frozen)
    proc = subprocess.run([str(link)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "extractaudio" in proc.stderr + proc.stdout


def test_no_readline_is_bundled(frozen: Path) -> None:
    """GNU readline is GPL-3: neither it nor the module ships (ncurses, MIT/X11, does:
    `rtpproxy top` draws with curses)."""
    names = bundled_names(frozen)
    assert any(name.startswith("libpython") for name in names), names
    unwanted = [
        name for name in names if re.search(r"(^|/)(libreadline|libhistory|readline\.)", name)
    ]
    assert not unwanted, unwanted
    listing = subprocess.run(
        [str(REPO / ".venv" / "bin" / "pyi-archive_viewer"), "-r", "-b", str(frozen)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    assert "pyimod01_archive" in listing.stdout
    assert not re.search(r"\breadline\b", listing.stdout), listing.stdout


def test_sigkill_from_test_helpers_leaves_no_unpack_dir(
    frozen: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed itself, the bootloader would leave its _MEI* dir behind in $TMPDIR."""
    unpack = workdir / "tmp"
    unpack.mkdir()
    monkeypatch.setenv("RTPP_BIN", str(frozen))
    proxy = start_proxy("-l", "127.0.0.1", extra_env={"TMPDIR": str(unpack)})
    try:
        assert [p.name[:4] for p in unpack.iterdir()] == ["_MEI"]
        daemon = proxy.pid
        assert daemon != proxy.proc.pid  # the serving child of the bootloader
        proxy.stop(signal.SIGKILL, timeout=STOP_TIMEOUT_S)
        assert not pid_alive(daemon)
        assert proxy.proc.poll() is not None
        assert list(unpack.iterdir()) == []
    finally:
        proxy.cleanup()


def test_tools_as_first_argument(frozen: Path) -> None:
    proc = subprocess.run([str(frozen), "makeann"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "makeann" in proc.stderr + proc.stdout


def test_foreground_pidfile_names_child_and_term_stops_it(frozen: Path, workdir: Path) -> None:
    port = free_udp_port()
    pidfile = workdir / "rtpproxy.pid"
    sock = workdir / "ctl.sock"
    args = daemon_args(port, "-f", "-s", f"unix:{sock}", "-p", str(pidfile))
    proc = subprocess.Popen(
        [str(frozen), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(ready(port), START_TIMEOUT_S, "V reply", proc)
        pid = wait_for(lambda: read_pid(pidfile), START_TIMEOUT_S, "pidfile", proc)
        assert pid_alive(pid)
        assert sock.is_socket()
        exercise_commands(port)
        os.kill(pid, signal.SIGTERM)
        assert proc.wait(timeout=STOP_TIMEOUT_S) == 0, proc.stderr.read()
        assert not pid_alive(pid)
        assert not pidfile.exists()
        assert not sock.exists()
    finally:
        stop_quietly(proc)


def test_detached_daemon_serves_after_loader_exits(frozen: Path, workdir: Path) -> None:
    """Without -f the start command returns once the daemon is up; it keeps working."""
    port = free_udp_port()
    pidfile = workdir / "rtpproxy.pid"
    args = daemon_args(port, "-p", str(pidfile))
    start = subprocess.run([str(frozen), *args], capture_output=True, text=True, timeout=60)
    assert start.returncode == 0, start.stderr
    pid = read_pid(pidfile)
    assert pid is not None and pid_alive(pid)
    try:
        wait_for(ready(port), START_TIMEOUT_S, "V reply")
        time.sleep(0.5)  # the bootloader has removed the unpacked archive by now
        exercise_commands(port)
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(pid), STOP_TIMEOUT_S, "daemon exit")
        assert not pidfile.exists()
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_drops_privileges_with_u_nobody(frozen: Path, workdir: Path) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    port = free_udp_port()
    pidfile = workdir / "rtpproxy.pid"
    args = daemon_args(port, "-f", "-u", "nobody", "-p", str(pidfile))
    proc = subprocess.Popen(
        [str(frozen), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(ready(port), START_TIMEOUT_S, "V reply", proc)
        pid = wait_for(lambda: read_pid(pidfile), START_TIMEOUT_S, "pidfile", proc)
        assert proc_uid_gid(pid) == (nobody.pw_uid, nobody.pw_gid)
        exercise_commands(port)
        proc.send_signal(signal.SIGTERM)  # to the bootloader, which forwards it
        assert proc.wait(timeout=STOP_TIMEOUT_S) == 0, proc.stderr.read()
        assert not pid_alive(pid)
    finally:
        stop_quietly(proc)
