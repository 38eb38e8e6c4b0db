"""Daemon behaviour against real processes (OPERATIONS.md 2)."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import stat
import subprocess
import tempfile

import pytest

from helpers import (
    free_tcp_port,
    free_udp_port,
    next_port_range,
    pid_alive,
    rtpproxy_command,
    short_tmpdir,
)

pytestmark = pytest.mark.timeout(60)


def proc_ids(pid: int) -> dict[str, list[int]]:
    ids = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                ids[key] = [int(v) for v in value.split()]
    return ids


def test_daemonizing_parent_exits_0_once_ready(rtpproxy):
    d = short_tmpdir()
    sock = os.path.join(d, "ctl.sock")
    pidfile = os.path.join(d, "pid")
    udp = free_udp_port()
    p = rtpproxy(
        "-s", f"udp:127.0.0.1:{udp}", "-s", f"unix:{sock}", "-p", pidfile, foreground=False
    )  # fmt: skip
    assert p.proc.returncode == 0
    assert p.daemon_pid != p.proc.pid and pid_alive(p.daemon_pid)
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    with open(f"/proc/{p.daemon_pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    assert int(fields[3]) == p.daemon_pid  # session leader (setsid)
    assert os.readlink(f"/proc/{p.daemon_pid}/cwd") == "/"
    assert os.readlink(f"/proc/{p.daemon_pid}/fd/0") == "/dev/null"
    p.stop()
    assert not pid_alive(p.daemon_pid)
    assert not os.path.exists(pidfile) and not os.path.exists(sock)


def test_daemon_keeps_cwd_with_D(rtpproxy):
    d = short_tmpdir()
    p = rtpproxy("-D", "-p", os.path.join(d, "pid"), foreground=False)
    assert os.readlink(f"/proc/{p.daemon_pid}/cwd") == os.getcwd()


def start_raw(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        rtpproxy_command() + list(args), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("foreground", [True, False])
def test_bind_failure_exits_1_with_message(foreground):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        low, high = next_port_range()
        d = short_tmpdir()
        args = ["-F", "-s", f"udp:127.0.0.1:{port}", "-m", str(low), "-M", str(high)]
        args += ["-p", os.path.join(d, "pid")] + (["-f"] if foreground else [])
        result = start_raw(*args)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert (
        lines[0]
        == f"rtpproxy: can't bind to a socket: udp:127.0.0.1:{port}: Address already in use"
    )
    assert not os.path.exists(os.path.join(d, "pid"))


def test_pidfile_holds_the_pid_and_is_removed_on_term(rtpproxy):
    p = rtpproxy()
    pidfile = os.path.join(p.tmpdir, "pid")
    with open(pidfile) as f:
        assert f.read() == f"{p.pid}\n"
    assert p.stop() == 0
    assert not os.path.exists(pidfile)
    assert "INFO:GLOBAL:main: rtpproxy started, pid" in p.stderr_text()
    assert "rtpproxy ended" in p.stderr_text()


def test_pidfile_of_someone_else_is_left_alone(rtpproxy):
    p = rtpproxy()
    pidfile = os.path.join(p.tmpdir, "pid")
    with open(pidfile, "w") as f:
        f.write("1\n")
    assert p.stop() == 0
    with open(pidfile) as f:
        assert f.read() == "1\n"


def test_dev_null_pidfile_is_never_unlinked(rtpproxy):
    before = os.stat("/dev/null")
    p = rtpproxy("-p", "/dev/null")
    assert p.stop() == 0
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


@pytest.mark.parametrize("path", ["//dev/null", "/dev/./null"])
def test_dev_null_spelled_otherwise_is_left_alone(rtpproxy, path):
    before = os.stat("/dev/null")
    p = rtpproxy("-p", path)
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    assert p.stop() == 0
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_pidfile_path_holding_a_fifo_is_neither_replaced_nor_removed(rtpproxy, tmp_path):
    fifo = tmp_path / "pid.fifo"
    os.mkfifo(fifo)
    p = rtpproxy("-p", str(fifo))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert p.stop() == 0
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert "it exists and is not a regular file" in p.stderr_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_terminating_signals_exit_0(rtpproxy, sig):
    p = rtpproxy()
    assert p.stop(sig) == 0
    assert f"got signal {int(sig)}" in p.stderr_text()


def test_second_term_during_shutdown_is_harmless(rtpproxy):
    p = rtpproxy()
    os.kill(p.pid, signal.SIGTERM)
    os.kill(p.pid, signal.SIGTERM)
    assert p.proc.wait(timeout=10) == 0
    assert "Traceback" not in p.stderr_text()


def test_sigpipe_is_ignored(rtpproxy):
    p = rtpproxy()
    os.kill(p.pid, signal.SIGPIPE)
    assert p.cmd("V") == "20040107"


def test_sighup_drains_and_exits_0_without_sessions(rtpproxy):
    p = rtpproxy()
    os.kill(p.pid, signal.SIGHUP)
    assert p.proc.wait(timeout=10) == 0
    err = p.stderr_text()
    assert "got SIGHUP, initiating deorbiting-burn sequence" in err
    assert "deorbiting-burn sequence completed, exiting" in err


@pytest.mark.skipif(os.getuid() != 0, reason="needs root")
def test_u_nobody_drops_privileges(rtpproxy):
    nobody = pwd.getpwnam("nobody")
    d = short_tmpdir()
    os.chmod(d, 0o777)
    p = rtpproxy("-u", "nobody", "-p", os.path.join(d, "pid"))
    ids = proc_ids(p.pid)
    assert set(ids["Uid"]) == {nobody.pw_uid}
    assert set(ids["Gid"]) == {nobody.pw_gid}  # the primary group, not root's 0
    assert 0 not in ids["Groups"]
    assert p.stop() == 0


def test_stale_unix_socket_is_replaced_at_restart(rtpproxy):
    d = short_tmpdir()
    path = os.path.join(d, "ctl.sock")
    first = rtpproxy("-s", f"unix:{path}")
    first.stop(signal.SIGKILL)
    assert stat.S_ISSOCK(os.stat(path).st_mode)  # left behind by the killed daemon
    second = rtpproxy("-s", f"unix:{path}")
    assert second.cmd("V") == "20040107"


@pytest.mark.parametrize("foreground", [True, False])
def test_no_resolve_refuses_a_notify_host_name_at_start_up(rtpproxy, foreground):
    target = f"tcp:localhost:{free_tcp_port()}"
    proxy = rtpproxy("--no_resolve", "-n", target, foreground=foreground, wait=False)
    assert proxy.proc.wait(timeout=20) == 1
    lines = proxy.stderr_text().splitlines()
    assert lines[0].startswith(f"rtpproxy: error adding timeout notification: {target}: ")
    assert not os.path.exists(os.path.join(proxy.tmpdir, "pid"))


def test_notify_host_name_is_resolved_without_no_resolve(rtpproxy):
    proxy = rtpproxy("-n", f"tcp:localhost:{free_tcp_port()}")
    assert proxy.cmd("V") == "20040107"
    numeric = rtpproxy("--no_resolve", "-n", f"tcp:127.0.0.1:{free_tcp_port()}")
    assert numeric.cmd("V") == "20040107"


@pytest.mark.parametrize("spec", ["unix:{}", "{}"])
def test_regular_file_at_socket_path_is_replaced_by_the_socket(rtpproxy, spec):
    fd, path = tempfile.mkstemp(dir=short_tmpdir())  # as a test harness makes it
    os.close(fd)
    proxy = rtpproxy("-s", spec.format(path))
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert proxy.cmd("V") == "20040107"
    assert proxy.stop() == 0
    assert "removed the empty file at that path" in proxy.stderr_text()
    assert not os.path.exists(path)


@pytest.mark.parametrize("kind", ["file with data", "directory", "fifo", "symlink"])
def test_other_things_at_socket_path_are_left_alone(kind):
    d = short_tmpdir()
    path = os.path.join(d, "ctl")
    if kind == "file with data":
        with open(path, "w") as f:
            f.write("keep")
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        os.symlink(os.path.join(d, "elsewhere"), path)
    before = os.lstat(path)
    low, high = next_port_range()
    result = start_raw("-f", "-F", "-s", f"unix:{path}", "-m", str(low), "-M", str(high))
    assert result.returncode == 1
    assert f"can't bind to a socket: unix:{path}" in result.stderr
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


@pytest.mark.parametrize(
    "args,message",
    [
        (["-6", ""], "init_bindaddrs: host2bindaddr(): empty address"),
        (["--dso", ""], "rtpproxy: --dso: empty module path"),
        (["--dso", "acct_csv"], "use --acct instead"),
        (["--config", "{conf}"], "--config {conf}: line 1: unexpected ':'"),
    ],
)
def test_bad_start_up_arguments_refuse_the_start_before_detaching(args, message):
    d = short_tmpdir()
    conf = os.path.join(d, "broken.conf")
    with open(conf, "w") as f:
        f.write("modules {:\n}\n")
    pidfile = os.path.join(d, "pid")
    low, high = next_port_range()
    args = [a.format(conf=conf) for a in args]
    result = start_raw(
        "-F", "-s", f"unix:{os.path.join(d, 'ctl.sock')}", "-p", pidfile,
        "-m", str(low), "-M", str(high), *args,
    )  # fmt: skip
    assert result.returncode == 1
    assert message.format(conf=conf) in result.stderr.splitlines()[0]
    assert not os.path.exists(pidfile) and not os.path.exists(os.path.join(d, "ctl.sock"))


def test_second_instance_on_a_live_unix_socket_exits_1_and_takes_nothing_over(rtpproxy):
    d = short_tmpdir()
    path = os.path.join(d, "ctl.sock")
    pidfile = os.path.join(d, "pid")
    first = rtpproxy("-s", f"unix:{path}", "-p", pidfile)
    inode = os.stat(path).st_ino
    low, high = next_port_range()
    result = start_raw(
        "-f", "-F", "-s", f"unix:{path}", "-p", pidfile, "-m", str(low), "-M", str(high),
        timeout=10,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"rtpproxy: can't bind to a socket: unix:{path}: "
        "Address already in use (a running process serves it)"
    )
    assert f"rtpproxy: {pidfile} names process {first.pid}, still running" in lines
    assert os.stat(path).st_ino == inode
    with open(pidfile) as f:
        assert f.read() == f"{first.pid}\n"
    assert first.cmd("V") == "20040107"
    assert first.stop() == 0
    assert not os.path.exists(path) and not os.path.exists(pidfile)


def test_stopping_leaves_alone_a_socket_another_process_bound_at_the_path(rtpproxy):
    d = short_tmpdir()
    path = os.path.join(d, "ctl.sock")
    first = rtpproxy("-s", f"unix:{path}")
    os.unlink(path)  # e.g. an operator removed it
    second = rtpproxy("-s", f"unix:{path}")
    assert first.stop() == 0
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert second.cmd("V") == "20040107"
    assert second.stop() == 0
    assert not os.path.exists(path)


@pytest.mark.parametrize("kind", ["unix", "cunix"])
def test_w_sets_the_unix_socket_mode_without_u(rtpproxy, kind):
    d = short_tmpdir()
    path = os.path.join(d, "ctl.sock")
    p = rtpproxy("-s", f"{kind}:{path}", "-s", f"udp:127.0.0.1:{free_udp_port()}", "-w", "384")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # 384 decimal
    assert p.cmd("V") == "20040107"
