"""The Debian package under a real systemd (a throw-away container, tests/packaging/
nspawn.py): install starts the unit (Type=notify), its sandboxing is in force, reload
is a live handoff that systemd follows (MAINPID), an upgrade to a newer package hands
a call in progress over without losing a packet, and stop stops it. The same unit
running the daemon from source (the interpreter as the main process) follows a reload
and stops cleanly too.

The tests run in file order against one container and one installation.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nspawn import Container, unavailable

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
UNIT = "rtpproxy.service"
SOCK = "/run/rtpproxy/rtpproxy.sock"
PIDFILE = "/run/rtpproxy/rtpproxy.pid"
OPTIONS = 'OPTIONS="-l 127.0.0.1 -m 30000 -M 30999 -d INFO"\n'
NEWER = "3.2.0+1"
ETC_FOR_ADDUSER = ("pam.d", "pam.conf", "security", "login.defs", "adduser.conf", "shells")

_why = unavailable()
pytestmark = [
    pytest.mark.packaging,
    pytest.mark.timeout(400),
    pytest.mark.skipif(_why is not None, reason=_why or ""),
]


def run(*cmd: str, timeout: float = 900) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def other_build(work: Path) -> Path:
    """The executable built again with another build id (so its embedded archive is laid
    out differently): what an upgrade puts at the running executable's path."""
    env = dict(os.environ, GIT_DIR=str(work / "no-git"), SOURCE_DATE_EPOCH="1900000000")
    subprocess.run(
        [str(REPO / ".venv" / "bin" / "pyinstaller"), "--noconfirm", "--log-level", "WARN",
         "--distpath", str(work / "dist"), "--workpath", str(work / "build"),
         str(REPO / "packaging" / "rtpproxy.spec")],
        check=True, env=env, capture_output=True, timeout=900,
    )  # fmt: skip
    return work / "dist" / "rtpproxy"


@pytest.fixture(scope="module")
def debs(tmp_path_factory) -> tuple[Path, Path]:
    """The package (`make deb`) and a newer version of it with another build inside."""
    subprocess.run([str(REPO / "packaging" / "install-deps.sh"), "check"], check=True)
    out = run("make", "-C", str(REPO), "deb")
    first = Path([ln for ln in out.splitlines() if re.fullmatch(r"/\S+\.deb", ln)][-1])
    work = tmp_path_factory.mktemp("newer")
    tree = work / "tree"
    run("dpkg-deb", "-R", str(first), str(tree))
    shutil.copy(other_build(work), tree / "usr" / "bin" / "rtpproxy")
    control = tree / "DEBIAN" / "control"
    control.write_text(re.sub(r"(?m)^Version: .*$", f"Version: {NEWER}", control.read_text()))
    newer = tree.parent / f"rtpproxy_{NEWER}.deb"
    run("dpkg-deb", "-Zgzip", "--root-owner-group", "-b", str(tree), str(newer))
    return first, newer


def source_binds() -> tuple[str, ...]:
    """What the daemon run from source needs of this machine beyond /usr: the source
    tree, the virtualenv and the interpreter it was made from."""
    paths: list[str] = []
    for path in sorted(
        {str(REPO), os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    ):
        if path == "/usr" or path.startswith("/usr/"):
            continue  # the container has this machine's /usr
        if not any(path.startswith(p.rstrip("/") + "/") for p in paths):
            paths.append(path)
    return tuple(paths)


@pytest.fixture(scope="module")
def container(tmp_path_factory) -> Iterator[Container]:
    container = Container(tmp_path_factory.mktemp("nspawn"), binds=source_binds())
    try:
        container.boot()
    except RuntimeError as exc:
        container.poweroff()
        pytest.fail(str(exc))
    try:
        yield container
    finally:
        container.poweroff()


@pytest.fixture(scope="module")
def box(container, debs) -> Container:
    # The container's /var is empty: give dpkg this machine's package database.
    shutil.copytree("/var/lib/dpkg", container.path("/var/lib/dpkg"), dirs_exist_ok=True)
    container.path("/var/lib/dpkg/statoverride").write_text("")  # names this machine's groups
    # ... and what adduser needs of /etc (PAM for chfn, login.defs for useradd).
    for name in ETC_FOR_ADDUSER:
        src = Path("/etc") / name
        if src.is_dir():
            shutil.copytree(src, container.path(f"/etc/{name}"), dirs_exist_ok=True)
        elif src.exists():
            shutil.copy(src, container.path(f"/etc/{name}"))
    container.path("/etc/default").mkdir(parents=True, exist_ok=True)
    container.path("/etc/default/rtpproxy").write_text(OPTIONS)
    for deb in debs:
        shutil.copy(deb, container.path(f"/root/{deb.name}"))
    # A container image's policy-rc.d (exit 101) would keep the package from starting,
    # reloading or stopping the service, as it does on a real appliance; the container's
    # /usr is an overlay, so this machine keeps its own.
    container.run("rm", "-f", "/usr/sbin/policy-rc.d")
    return container


def show(box: Container, prop: str) -> str:
    return show_unit(box, UNIT, prop)


def show_unit(box: Container, unit: str, prop: str) -> str:
    return box.run("systemctl", "show", f"--property={prop}", "--value", unit).stdout.strip()


def daemon_pid(box: Container) -> int:
    return int(box.path(PIDFILE).read_text())


def control(box: Container, text: str) -> str:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(box.path(SOCK)))
        s.sendall(text.encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.decode().strip()


def parent(box: Container, pid: int | str) -> str:
    return box.run("cat", f"/proc/{pid}/stat").stdout.split(") ")[1].split()[1]


def wait_main_pid_change(box: Container, old: str, timeout: float = 40) -> str:
    """The new MainPID, once it is the new daemon's bootloader (systemd's child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = show(box, "MainPID")
        if pid not in (old, "0") and show(box, "ActiveState") == "active":
            daemon = daemon_pid(box)
            if pid == parent(box, daemon) and parent(box, pid) == "1":
                return pid
        time.sleep(0.2)
    journal = box.run("journalctl", "-u", UNIT, "--no-pager", check=False).stdout
    pytest.fail(f"MainPID stayed {old}:\n{journal[-4000:]}")


def journal(box: Container) -> str:
    return journal_of(box, UNIT)


def journal_of(box: Container, unit: str) -> str:
    return box.run("journalctl", "-u", unit, "--no-pager", check=False).stdout


def test_install_starts_the_unit_and_it_notifies(box, debs):
    box.run("dpkg", "-i", "--force-confold", f"/root/{debs[0].name}")
    assert show(box, "ActiveState") == "active"  # Type=notify: READY=1 arrived
    assert "live handoff" in show(box, "StatusText")
    main = int(show(box, "MainPID"))
    pid = daemon_pid(box)
    # The one-file executable: the daemon is the child of the bootloader systemd started.
    assert parent(box, pid) == str(main)
    assert control(box, "V") == "20040107"


def test_the_unit_sandboxing_is_in_force(box):
    pid = daemon_pid(box)
    status = box.run("cat", f"/proc/{pid}/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    uid = box.run("id", "-u", "rtpproxy").stdout.strip()
    assert fields["Uid"].split()[:2] == [uid, uid]
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"
    assert int(fields["CapBnd"], 16) == 0 and int(fields["CapEff"], 16) == 0
    # ProtectSystem=strict, PrivateTmp, ProtectHome, PrivateDevices, in its mount namespace:
    enter = ("nsenter", "-t", str(pid), "-m", "--")
    for path in ("/usr/rtpp-probe", "/etc/rtpp-probe", "/var/lib/rtpp-probe"):
        proc = box.run(*enter, "touch", path, check=False)
        assert proc.returncode != 0 and "Read-only file system" in proc.stderr, path
    box.run(*enter, "touch", "/var/lib/rtpproxy/probe")  # its StateDirectory is writable
    box.run("touch", "/tmp/host-side")
    assert box.run(*enter, "ls", "/tmp", check=False).stdout.split().count("host-side") == 0
    assert box.run(*enter, "ls", "/dev", check=False).stdout.split().count("sda") == 0
    home = box.run(*enter, "stat", "-c", "%a", "/home", check=False).stdout.strip()
    assert home in ("0", "000", ""), home


def test_reload_hands_over_and_systemd_follows_the_main_pid(box):
    old_main, old_daemon = show(box, "MainPID"), daemon_pid(box)
    box.run("systemctl", "reload", UNIT)
    new_main = wait_main_pid_change(box, old_main)
    assert daemon_pid(box) != old_daemon
    assert box.run("test", "-d", f"/proc/{old_main}", check=False).returncode != 0
    assert control(box, "V") == "20040107"
    assert "live handoff done" in journal(box)
    assert show(box, "NRestarts") == "0"
    assert new_main != old_main


def test_upgrade_hands_a_call_in_progress_to_the_new_version(box, debs):
    before = box.run("rtpproxy", "-V").stdout.strip()
    helper = subprocess.Popen(
        box.net_command(sys.executable, str(HERE / "call_helper.py"), str(box.path(SOCK))),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert helper.stdout.readline().strip() == "ready", helper.stderr.read()
        time.sleep(1.0)
        old_main = show(box, "MainPID")
        out = box.run("dpkg", "-i", "--force-confold", f"/root/{debs[1].name}")
        assert "did not hand over" not in out.stderr, out.stderr
        wait_main_pid_change(box, old_main)
        status = box.run("dpkg-query", "-W", "-f", "${Version}", "rtpproxy").stdout
        assert status == NEWER
        assert box.run("rtpproxy", "-V").stdout.strip().endswith(".20300317174640")
        time.sleep(1.0)
        helper.stdin.write("stop\n")
        helper.stdin.flush()
        result = json.loads(helper.stdout.readline())
    finally:
        helper.kill()
        helper.wait()
    for direction in ("a_to_b", "b_to_a"):
        sent, received, dups = result[direction]
        assert sent > 100 and (received, dups) == (sent, 0), result
    assert journal(box).count("live handoff done") == 2
    assert not before.endswith(".20300317174640")


def test_stop_stops_and_cleans_up(box):
    box.run("systemctl", "stop", UNIT)
    assert show(box, "ActiveState") == "inactive", journal(box)[-3000:]
    assert show(box, "Result") == "success"
    assert "rtpproxy ended" in journal(box).rsplit("took over", 1)[1]  # a clean stop
    assert not box.path(SOCK).exists()
    assert not box.path(PIDFILE).exists()


SOURCE_UNIT = "rtpproxy-source.service"
SOURCE_RUN = "/run/rtpproxy-source"


def source_unit() -> str:
    """The packaged unit (its notify, kill and sandboxing settings) running the daemon
    from source, as an unprivileged user, with its own directories."""
    unit = (REPO / "debian" / "rtpproxy.service").read_text()
    start = (
        f"ExecStart={sys.executable} {REPO / 'rtpproxy.py'} -f -s unix:{SOURCE_RUN}/rtpproxy.sock"
        f" -p {SOURCE_RUN}/rtpproxy.pid -l 127.0.0.1 -m 31000 -M 31999 -d INFO"
    )
    unit = re.sub(r"(?m)^ExecStart=.*$", start, unit)
    unit = re.sub(r"(?m)^User=.*$", "User=nobody", unit)
    unit = re.sub(r"(?m)^Group=.*$", "Group=nogroup", unit)
    unit = re.sub(
        r"(?m)^(RuntimeDirectory|StateDirectory|LogsDirectory)=.*$", r"\1=rtpproxy-source", unit
    )
    # The interpreter or the source tree may live in a home directory, or in /tmp.
    unit = re.sub(r"(?m)^ProtectHome=.*$", "ProtectHome=read-only", unit)
    if any(p.startswith(("/tmp/", "/var/tmp/")) for p in source_binds()):
        unit = re.sub(r"(?m)^PrivateTmp=.*$", "PrivateTmp=no", unit)
    return unit


def test_from_source_the_unit_follows_a_handoff_and_stops_cleanly(container):
    """Run from source the daemon is the main process itself. Its successor is the old
    process's child when it names itself (MAINPID=), which systemd takes for a process
    it need not wait for: a stop would SIGKILL it at once, without its clean-up. Once
    adopted, it must have systemd look at it again."""
    for path in source_binds():  # the directories leading to them are the container's
        for above in map(str, Path(path).parents):
            os.chmod(container.path(above), container.path(above).stat().st_mode | 0o011)
    container.path(f"/run/systemd/system/{SOURCE_UNIT}").write_text(source_unit())
    container.run("systemctl", "daemon-reload")
    container.run("systemctl", "start", SOURCE_UNIT)
    pidfile = container.path(f"{SOURCE_RUN}/rtpproxy.pid")
    old = int(pidfile.read_text())
    assert show_unit(container, SOURCE_UNIT, "MainPID") == str(old)  # no bootloader

    container.run("systemctl", "reload", SOURCE_UNIT)
    deadline = time.monotonic() + 40
    while "systemd supervises process" not in journal_of(container, SOURCE_UNIT):
        if time.monotonic() > deadline:
            break  # without the renewal: the stop below shows what it costs
        time.sleep(0.2)
    new = int(pidfile.read_text())
    assert new != old and show_unit(container, SOURCE_UNIT, "MainPID") == str(new)
    assert parent(container, new) == "1", journal_of(container, SOURCE_UNIT)

    container.run("systemctl", "stop", SOURCE_UNIT)
    log = journal_of(container, SOURCE_UNIT).rsplit("took over", 1)[1]
    assert "SIGKILL" not in log and "timed out" not in log, log
    assert "got signal 15" in log and "rtpproxy ended" in log, log  # its own clean-up ran
    assert show_unit(container, SOURCE_UNIT, "ActiveState") == "inactive"
    assert show_unit(container, SOURCE_UNIT, "Result") == "success"
    assert not pidfile.exists()
    assert not container.path(f"{SOURCE_RUN}/rtpproxy.sock").exists()
