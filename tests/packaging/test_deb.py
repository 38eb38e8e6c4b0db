"""The Debian package: build (`make deb`), contents, install, run as the service, purge.

Needs root (dpkg -i); installs the Debian tools it needs when they are missing.
The tests run in file order and share one installed package (module fixture).

Here the installed executable runs its ExecStart command line under the service
user (setpriv, umask, NOTIFY_SOCKET), and `systemd-analyze verify` checks the unit
file; test_systemd.py runs the unit under a real systemd (start, sandboxing, reload,
upgrade, stop).
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
from PyInstaller.archive.readers import CArchiveReader

from helpers import UdpClient, kill_launched, next_port_range
from integration.media_util import parse_port_reply, rtp

REPO = Path(__file__).resolve().parents[2]
# debhelper installs units under /usr/lib (newer) or /lib (older, and bookworm's).
UNIT_PATHS = (
    Path("/usr/lib/systemd/system/rtpproxy.service"),
    Path("/lib/systemd/system/rtpproxy.service"),
)
DEFAULTS = Path("/etc/default/rtpproxy")
LOGROTATE = Path("/etc/logrotate.d/rtpproxy")
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
    "/usr/share/man/man1/rtpproxy-top.1.gz",
    "/usr/bin/rtpproxy-top",
    "/usr/share/rtpproxy/rtpproxy-dashboard.json",
    str(DEFAULTS),
    str(LOGROTATE),
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


def installed_unit() -> Path:
    for path in UNIT_PATHS:
        if path.exists():
            return path
    pytest.fail(f"no unit installed at {' or '.join(map(str, UNIT_PATHS))}")


def unit_exec_start() -> list[str]:
    """The installed unit's ExecStart, with $OPTIONS from /etc/default/rtpproxy."""
    line = next(
        ln for ln in installed_unit().read_text().splitlines() if ln.startswith("ExecStart=")
    ).removeprefix("ExecStart=")
    options = run("sh", "-c", f'. {DEFAULTS} && printf %s "$OPTIONS"').stdout
    words = []
    for word in shlex.split(line):
        words.extend(shlex.split(options) if word == "$OPTIONS" else [word])
    return words


def kill_group(proc: subprocess.Popen) -> None:
    """Kill the daemon, let its bootloader clean up and exit, then kill any straggler."""
    kill_launched(proc, timeout=STOP_TIMEOUT_S)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def glibc_version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split("."))


def bundled_glibc_needs(executable: Path, tmp: Path) -> dict[str, tuple[int, ...]]:
    """Highest GLIBC_* symbol version that `objdump -T` finds in each bundled binary."""
    archive = CArchiveReader(str(executable))
    needs = {}
    for name, entry in archive.toc.items():
        if entry[-1] != "b":  # shared libraries and extension modules
            continue
        path = tmp / name.replace("/", "_")
        path.write_bytes(archive.extract(name))
        symbols = run("objdump", "-T", str(path)).stdout
        found = re.findall(r"\bGLIBC_(\d+(?:\.\d+)+)\b", symbols)
        if found:
            needs[name] = max(map(glibc_version, found))
    return needs


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
    assert sum(str(path) in entries for path in UNIT_PATHS) == 1, listing
    assert entries["/usr/bin/rtpproxy"][0] == "-rwxr-xr-x"
    assert entries["/usr/bin/makeann"] == ("lrwxrwxrwx", "rtpproxy")
    assert entries["/usr/bin/extractaudio"] == ("lrwxrwxrwx", "rtpproxy")
    assert entries["/usr/bin/rtpproxy-top"] == ("lrwxrwxrwx", "rtpproxy")
    size = int(listing.split("./usr/bin/rtpproxy\n")[0].splitlines()[-1].split()[2])
    assert size == (REPO / "dist" / "rtpproxy").stat().st_size  # not stripped
    control = run("dpkg-deb", "-f", str(deb), "Depends", "Section").stdout
    assert "adduser" in control and "Section: net" in control
    conffiles = run("dpkg-deb", "-I", str(deb), "conffiles").stdout.split()
    assert str(DEFAULTS) in conffiles and str(LOGROTATE) in conffiles


def test_depends_on_the_glibc_the_bundled_libraries_need(deb: Path, tmp_path: Path) -> None:
    """dh_shlibdeps sees only the bootloader; libpython & co. need a newer glibc."""
    needs = bundled_glibc_needs(REPO / "dist" / "rtpproxy", tmp_path)
    libpython = [v for name, v in needs.items() if name.startswith("libpython")]
    assert libpython, sorted(needs)
    highest = max(needs.values())
    assert highest >= max(libpython)
    depends = run("dpkg-deb", "-f", str(deb), "Depends").stdout.strip()
    bounds = re.findall(r"\blibc6 \(>= ([\d.]+)\)", depends)
    assert bounds, depends
    # The strongest libc6 bound (dpkg-gencontrol merges them into one) is exactly
    # the highest version a bundled library requires.
    assert max(map(glibc_version, bounds)) == highest, (depends, highest)


def test_upgrade_does_not_stop_or_restart_the_service(deb: Path, tmp_path: Path) -> None:
    """An upgrade would cut every call's media: only a removal stops the service."""
    run("dpkg-deb", "-e", str(deb), str(tmp_path / "control"))
    scripts = {
        name: (tmp_path / "control" / name).read_text()
        for name in ("preinst", "postinst", "prerm", "postrm")
        if (tmp_path / "control" / name).exists()
    }
    for name, text in scripts.items():
        assert not re.search(r"deb-systemd-invoke\s+\S*restart", text), (name, text)
        assert "_dh_action=restart" not in text, (name, text)
    assert "deb-systemd-invoke stop" not in scripts.get("preinst", "")
    prerm = scripts["prerm"]
    assert re.search(r'\[ "\$1" = remove \].*\n\s*deb-systemd-invoke stop', prerm), prerm
    assert "deb-systemd-invoke start" in scripts["postinst"]  # a no-op when running
    # ... and an upgrade hands the calls over to the new executable (live handoff).
    assert "deb-systemd-invoke reload rtpproxy.service" in scripts["postinst"]


def test_lintian_reports_no_errors(deb: Path) -> None:
    proc = run("lintian", "--tag-display-limit", "0", str(deb), check=False, timeout=300)
    output = proc.stdout + proc.stderr
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
    assert not errors, output
    assert proc.returncode == 0, output  # fails on errors, and when lintian itself fails


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
    assert "usage: rtpproxy top" in run("/usr/bin/rtpproxy-top", "-h", check=False).stderr
    shipped = Path("/usr/share/rtpproxy/rtpproxy-dashboard.json").read_bytes()
    assert shipped == (REPO / "packaging" / "grafana" / "rtpproxy-dashboard.json").read_bytes()


def test_logrotate_rule_parses_and_signals_the_service(installed: Path) -> None:
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    state = tempfile.mktemp(prefix="rtpp-logrotate-")
    proc = run(logrotate, "-d", "-s", state, str(LOGROTATE), check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "error" not in output.lower(), output
    assert "/var/log/rtpproxy/*.json" in output
    assert "SIGWINCH" in LOGROTATE.read_text()
    unit = installed_unit().read_text()
    assert re.search(r"^LogsDirectory=rtpproxy$", unit, re.M)


def test_installed_unit_verifies(installed: Path) -> None:
    proc = run("systemd-analyze", "verify", str(installed_unit()), check=False, timeout=120)
    output = proc.stdout + proc.stderr
    # Without systemd as PID 1 the tool may complain about the environment; any
    # complaint about the unit file itself (path:line: ...) is a failure.
    problems = [ln for ln in output.splitlines() if re.search(r"rtpproxy\.service(:\d+)?:", ln)]
    assert not problems, output
    if proc.returncode != 0:
        assert re.search(r"systemd|bus|PID 1|booted", output, re.I), output


def test_unit_reloads_by_live_handoff_never_by_sighup() -> None:
    text = (REPO / "debian" / "rtpproxy.service").read_text()
    assert re.findall(r"^ExecReload=.*$", text, re.M) == ["ExecReload=/bin/kill -USR2 $MAINPID"]
    assert re.search(r"^Type=notify$", text, re.M) and re.search(r"^NotifyAccess=all$", text, re.M)


def test_daemon_runs_as_service_user(installed: Path) -> None:
    """ExecStart as systemd would run it: user rtpproxy, umask 0007, NOTIFY_SOCKET.

    It answers on its control sockets and relays a call's RTP both ways.
    """
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
    low, high = next_port_range()
    cmd = unit_exec_start() + [
        "-s",
        f"udp:127.0.0.1:{port}",
        "-l",
        "127.0.0.1",
        "-m",
        str(low),
        "-M",
        str(high),
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
        with UdpClient() as caller, UdpClient() as callee:
            offer = udp_command(port, f"U deb-call 127.0.0.1 {caller.port} ftag")
            assert offer is not None and offer.split()[0].isdigit(), offer
            answer = udp_command(port, f"L deb-call 127.0.0.1 {callee.port} ftag ttag")
            assert answer is not None and answer.split()[0].isdigit(), answer
            to_caller, _ = parse_port_reply(offer)  # the callee sends here
            to_callee, _ = parse_port_reply(answer)  # the caller sends here
            assert low <= min(to_caller, to_callee) and max(to_caller, to_callee) <= high
            for seq in range(3):
                packet = rtp(seq, seq * 160, 0x1234, b"\xd5" * 160)
                caller.send(packet, ("127.0.0.1", to_callee))
                assert callee.recv()[0] == packet
                reply = rtp(seq, seq * 160, 0x5678, b"\x55" * 160)
                callee.send(reply, ("127.0.0.1", to_caller))
                assert caller.recv()[0] == reply
            stats = udp_command(port, "Q deb-call ftag ttag")
            assert stats is not None and len(stats.split()) == 5, stats
            assert udp_command(port, "D deb-call ftag ttag") == "0"
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
