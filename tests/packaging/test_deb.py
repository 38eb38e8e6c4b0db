"""The Debian package: build (`make deb`), contents, install, run as the service, purge.

Needs root (dpkg -i); installs the Debian tools it needs when they are missing.
The tests run in file order and share one installed package (module fixture).
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = Path("/lib/systemd/system/rtpproxy.service")
DEFAULTS = Path("/etc/default/rtpproxy")
RUNDIR = Path("/run/rtpproxy")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
INSTALLED_FILES = (
    "/usr/bin/rtpproxy",
    "/usr/bin/makeann",
    "/usr/bin/extractaudio",
    "/usr/share/man/man8/rtpproxy.8.gz",
    "/usr/share/man/man1/makeann.1.gz",
    "/usr/share/man/man1/extractaudio.1.gz",
    str(UNIT),
    str(DEFAULTS),
)
COOKIES = count()
STATE_DIRS = ("/var/lib/rtpproxy", "/var/spool/rtpproxy")

pytestmark = [
    pytest.mark.packaging,
    pytest.mark.skipif(os.geteuid() != 0, reason="installing a package needs root"),
]


def run(*cmd: str, check: bool = True, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        pytest.fail(f"{shlex.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def version() -> str:
    changelog = str(REPO / "debian" / "changelog")
    return run("dpkg-parsechangelog", "-l", changelog, "-S", "Version").stdout.strip()


def user_exists(name: str) -> bool:
    return run("getent", "passwd", name, check=False).returncode == 0


def group_exists(name: str) -> bool:
    return run("getent", "group", name, check=False).returncode == 0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_command(port: int, command: str, timeout: float = 0.5) -> str | None:
    cookie = f"deb{os.getpid()}_{next(COOKIES)}"  # a fresh cookie: no reply-cache hit
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(f"{cookie} {command}".encode(), ("127.0.0.1", port))
        try:
            data = s.recv(65536).decode()
        except (TimeoutError, ConnectionRefusedError):
            return None
    assert data.startswith(cookie + " ")
    return data[len(cookie) + 1 :].rstrip("\n")


def unix_command(path: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        s.connect(str(path))
        s.sendall(command.encode())
        return s.recv(65536).decode().rstrip("\n")


def unit_exec_start() -> list[str]:
    """The installed unit's ExecStart, with $OPTIONS from /etc/default/rtpproxy."""
    line = next(
        ln for ln in UNIT.read_text().splitlines() if ln.startswith("ExecStart=")
    ).removeprefix("ExecStart=")
    options = run("sh", "-c", f'. {DEFAULTS} && printf %s "$OPTIONS"').stdout
    words = []
    for word in shlex.split(line):
        words.extend(shlex.split(options) if word == "$OPTIONS" else [word])
    return words


def kill_group(proc: subprocess.Popen) -> None:
    """Kill the bootloader and the daemon it started (same new session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="module")
def deb() -> Path:
    subprocess.run([str(REPO / "packaging" / "install-deps.sh"), "check"], check=True)
    proc = run("make", "-C", str(REPO), "deb", timeout=900)
    printed = [ln for ln in proc.stdout.splitlines() if re.fullmatch(r"/\S+\.deb", ln)]
    assert printed, proc.stdout
    path = Path(printed[-1])
    assert path.is_file(), proc.stdout
    arch = run("dpkg", "--print-architecture").stdout.strip()
    assert path.name == f"rtpproxy_{version()}_{arch}.deb"
    return path


@pytest.fixture(scope="module")
def installed(deb: Path) -> Iterator[Path]:
    run("dpkg", "-i", str(deb))
    yield deb
    run("dpkg", "--purge", "rtpproxy", check=False)


def test_version_matches_package(deb: Path) -> None:
    text = (REPO / "lib" / "rtpp" / "__init__.py").read_text()
    assert f'__version__ = "{version()}"' in text
    assert run("dpkg-deb", "-f", str(deb), "Version").stdout.strip() == "3.2.0"


def test_package_contents(deb: Path) -> None:
    listing = run("dpkg-deb", "-c", str(deb)).stdout
    entries = {}
    for line in listing.splitlines():
        fields = line.split(None, 5)
        name = fields[5].split(" -> ")
        entries[name[0].removeprefix(".")] = (fields[0], name[1] if len(name) > 1 else None)
    for path in INSTALLED_FILES:
        assert path in entries, path
    assert entries["/usr/bin/rtpproxy"][0] == "-rwxr-xr-x"
    assert entries["/usr/bin/makeann"] == ("lrwxrwxrwx", "rtpproxy")
    assert entries["/usr/bin/extractaudio"] == ("lrwxrwxrwx", "rtpproxy")
    size = int(listing.split("./usr/bin/rtpproxy\n")[0].splitlines()[-1].split()[2])
    assert size == (REPO / "dist" / "rtpproxy").stat().st_size  # not stripped
    control = run("dpkg-deb", "-f", str(deb), "Depends", "Section").stdout
    assert "adduser" in control and "Section: net" in control
    conffiles = run("dpkg-deb", "-I", str(deb), "conffiles").stdout.split()
    assert str(DEFAULTS) in conffiles


def test_lintian_reports_no_errors(deb: Path) -> None:
    proc = run("lintian", "--no-tag-display-limit", str(deb), check=False, timeout=300)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
    assert not errors, proc.stdout


def test_install_creates_user_and_dirs(installed: Path) -> None:
    entry = pwd.getpwnam("rtpproxy")
    assert entry.pw_dir == "/var/lib/rtpproxy"
    assert entry.pw_shell in ("/usr/sbin/nologin", "/sbin/nologin")
    assert entry.pw_uid < 1000
    assert group_exists("rtpproxy")
    for path in STATE_DIRS:
        st = os.stat(path)
        assert st.st_uid == entry.pw_uid and stat.S_IMODE(st.st_mode) == 0o750
    for path in INSTALLED_FILES:
        assert os.path.exists(path), path


def test_installed_binary_and_links_run(installed: Path) -> None:
    out = run("/usr/bin/rtpproxy", "-V").stdout
    assert out.startswith(f"{version()}.")
    assert run("/usr/bin/makeann", check=False).returncode == 1
    assert run("/usr/bin/extractaudio", check=False).returncode == 1


def test_installed_unit_verifies(installed: Path) -> None:
    proc = run("systemd-analyze", "verify", str(UNIT), check=False, timeout=120)
    output = proc.stdout + proc.stderr
    # Without systemd as PID 1 the tool may complain about the environment; any
    # complaint about the unit file itself (path:line: ...) is a failure.
    problems = [ln for ln in output.splitlines() if re.search(r"rtpproxy\.service(:\d+)?:", ln)]
    assert not problems, output
    if proc.returncode != 0:
        assert re.search(r"systemd|bus|PID 1|booted", output, re.I), output


def test_unit_does_not_reload_with_sighup() -> None:
    text = (REPO / "debian" / "rtpproxy.service").read_text()
    assert not re.search(r"^ExecReload=", text, re.M)
    assert re.search(r"^Type=notify$", text, re.M) and re.search(r"^NotifyAccess=all$", text, re.M)


def test_daemon_runs_as_service_user(installed: Path) -> None:
    """ExecStart as systemd would run it: user rtpproxy, umask 0007, NOTIFY_SOCKET."""
    made_rundir = not RUNDIR.exists()
    run("install", "-d", "-o", "rtpproxy", "-g", "rtpproxy", "-m", "0755", str(RUNDIR))
    tmp = Path(tempfile.mkdtemp(dir="/tmp", prefix="rtpp-deb-"))
    tmp.chmod(0o755)
    notify_path = tmp / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify_path.chmod(0o666)
    notify.settimeout(START_TIMEOUT_S)
    port = free_udp_port()
    low = 42000 + (os.getpid() % 100) * 100
    cmd = unit_exec_start() + [
        "-s",
        f"udp:127.0.0.1:{port}",
        "-l",
        "127.0.0.1",
        "-m",
        str(low),
        "-M",
        str(low + 99),
    ]
    assert cmd[:2] == ["/usr/bin/rtpproxy", "-f"]
    setpriv = shutil.which("setpriv")
    assert setpriv
    env = {"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": str(notify_path), "LANG": "C.UTF-8"}
    proc = subprocess.Popen(
        [setpriv, "--reuid=rtpproxy", "--regid=rtpproxy", "--init-groups", "--", *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: os.umask(0o007),
        start_new_session=True,
    )
    try:
        try:
            message = notify.recv(4096).decode()
        except TimeoutError:
            kill_group(proc)
            pytest.fail(f"no READY=1 notification:\n{proc.communicate()[1]}")
        assert "READY=1" in message
        pidfile = RUNDIR / "rtpproxy.pid"
        sock = RUNDIR / "rtpproxy.sock"
        pid = int(pidfile.read_text())
        status = Path(f"/proc/{pid}/status").read_text()
        uid = pwd.getpwnam("rtpproxy").pw_uid
        assert re.search(rf"^Uid:\s+{uid}\s", status, re.M)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o770
        assert unix_command(sock, "V") == "20040107"
        assert udp_command(port, "V") == "20040107"
        offer = udp_command(port, "U deb-call 127.0.0.1 9000 ftag")
        assert offer is not None and offer.split()[0].isdigit(), offer
        assert udp_command(port, "D deb-call ftag") == "0"
        proc.send_signal(signal.SIGTERM)  # KillMode=mixed: TERM to the main process
        assert proc.wait(timeout=STOP_TIMEOUT_S) == 0, proc.stderr.read()
        assert not pidfile.exists()
        assert not sock.exists()
    finally:
        kill_group(proc)
        notify.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if made_rundir:
            shutil.rmtree(RUNDIR, ignore_errors=True)


def test_purge_removes_everything(installed: Path) -> None:
    run("dpkg", "--purge", "rtpproxy")
    assert run("dpkg-query", "-W", "rtpproxy", check=False).returncode != 0
    for path in INSTALLED_FILES:
        assert not os.path.lexists(path), path
    assert not os.path.lexists("/etc/systemd/system/multi-user.target.wants/rtpproxy.service")
    assert not user_exists("rtpproxy")
    assert not group_exists("rtpproxy")
    for path in STATE_DIRS:
        assert not os.path.exists(path), path
