"""Control transports against a real daemon (PROTOCOL.md 1, 2)."""

from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
import time

import pytest

from helpers import free_tcp_port, free_udp_port, next_port_range, rtpproxy_command, short_tmpdir
from rtpp.stats import STAT_NAMES

pytestmark = pytest.mark.timeout(60)
VERSION = b"20040107\n"


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")


def udp_exchange(addr: tuple, data: bytes, timeout: float = 2.0) -> bytes:
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, addr)
        return s.recv(65536)


def stream_connect(kind: str, where) -> socket.socket:
    family = {"unix": socket.AF_UNIX, "tcp": socket.AF_INET, "tcp6": socket.AF_INET6}[kind]
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(where)
    return s


def recv_until(s: socket.socket, count: int) -> bytes:
    """Read until `count` LFs arrived (or EOF)."""
    data = b""
    while data.count(b"\n") < count:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def one_shot(path: str, data: bytes) -> bytes:
    with stream_connect("unix", path) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


# ---------------------------------------------------------------- every transport


def test_udp_answers_v_with_cookie(rtpproxy):
    p = rtpproxy()
    assert udp_exchange(p.udp_addr, b"8123_17 V") == b"8123_17 " + VERSION
    assert udp_exchange(p.udp_addr, b"abc VF 20050322") == b"abc 1\n"
    assert p.cmd("V") == "20040107"


@needs_ipv6
def test_udp6(rtpproxy):
    port = free_udp_port("::1", socket.AF_INET6)
    rtpproxy("-s", f"udp6:::1:{port}")
    assert udp_exchange(("::1", port), b"c6 V") == b"c6 " + VERSION


def test_unix_one_shot_without_lf(rtpproxy):
    p = rtpproxy(ctrl="unix")
    assert one_shot(p.unix_path, b"V") == VERSION
    assert one_shot(p.unix_path, b"V\n") == VERSION
    assert stat.S_ISSOCK(os.stat(p.unix_path).st_mode)


def test_unix_one_shot_eof_gets_no_reply(rtpproxy):
    p = rtpproxy(ctrl="unix")
    with stream_connect("unix", p.unix_path) as s:
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100) == b""
    assert p.cmd("V") == "20040107"


def test_cunix_is_persistent_and_ordered(rtpproxy):
    d = short_tmpdir()
    path = os.path.join(d, "c.sock")
    p = rtpproxy("-s", f"cunix:{path}", "-s", f"udp:127.0.0.1:{free_udp_port()}")
    with stream_connect("unix", path) as s:
        s.sendall(b"V\n\nVF 20050322\r\n")
        assert recv_until(s, 3) == b"20040107\nE5\n1\n"
        s.sendall(b"V\n")
        assert recv_until(s, 1) == VERSION
    assert p.alive()


def test_tcp(rtpproxy):
    port = free_tcp_port()
    rtpproxy("-s", f"tcp:127.0.0.1:{port}", "-s", f"udp:127.0.0.1:{free_udp_port()}")
    with stream_connect("tcp", ("127.0.0.1", port)) as s:
        s.sendall(b"V\nV\n")
        assert recv_until(s, 2) == VERSION * 2


@needs_ipv6
def test_tcp6(rtpproxy):
    port = free_tcp_port("::1", socket.AF_INET6)
    rtpproxy("-s", f"tcp6:::1:{port}", "-s", f"udp:127.0.0.1:{free_udp_port()}")
    with stream_connect("tcp6", ("::1", port)) as s:
        s.sendall(b"V\n")
        assert recv_until(s, 1) == VERSION


def stdio_run(ctrl: str, data: bytes, extra: tuple = ()) -> subprocess.CompletedProcess:
    low, high = next_port_range()
    d = short_tmpdir()
    args = ["-f", "-F", "-s", ctrl, "-m", str(low), "-M", str(high), "-p", f"{d}/pid", *extra]
    return subprocess.run(rtpproxy_command() + args, input=data, capture_output=True, timeout=20)


def test_stdio_replies_and_exits_on_eof():
    result = stdio_run("stdio:", b"V\n\nVF 20081224\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"20040107\nE5\n0\n"


def test_stdioc_exits_on_eof_even_with_udp():
    port = free_udp_port()
    result = stdio_run("stdioc:", b"V\n", ("-s", f"udp:127.0.0.1:{port}"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == VERSION


def test_several_sockets_at_once(rtpproxy):
    d = short_tmpdir()
    tcp, udp = free_tcp_port(), free_udp_port()
    unix = os.path.join(d, "u.sock")
    p = rtpproxy("-s", f"udp:127.0.0.1:{udp}", "-s", f"tcp:127.0.0.1:{tcp}", "-s", unix)
    assert udp_exchange(("127.0.0.1", udp), b"k V") == b"k " + VERSION
    assert one_shot(unix, b"V") == VERSION
    with stream_connect("tcp", ("127.0.0.1", tcp)) as s:
        s.sendall(b"V\n")
        assert recv_until(s, 1) == VERSION
    p.stop()
    assert not os.path.exists(unix)


# ---------------------------------------------------------------- UDP framing and cache


def test_udp_empty_and_cookie_only(rtpproxy):
    p = rtpproxy()
    assert udp_exchange(p.udp_addr, b"   \n") == b"E5\n"
    assert udp_exchange(p.udp_addr, b"lonely") == b"lonely E5\n"
    assert udp_exchange(p.udp_addr, b"c1\tV\r\n") == b"c1 " + VERSION


def counters(p) -> tuple[int, int]:
    rcvd, dups = p.cmd("G ncmds_rcvd ncmds_rcvd_ndups").split()
    return int(rcvd), int(dups)


def test_retransmission_answered_from_cache(rtpproxy):
    p = rtpproxy()
    rcvd0, dups0 = counters(p)
    first = udp_exchange(p.udp_addr, b"dup1 G ncmds_rcvd")
    again = udp_exchange(p.udp_addr, b"dup1 G ncmds_rcvd")
    assert first == again  # the cached bytes, not a new execution
    # the cache is keyed by cookie only: another sender gets the same reply
    assert udp_exchange(p.udp_addr, b"dup1 V") == first
    rcvd1, dups1 = counters(p)
    assert dups1 - dups0 == 2
    assert rcvd1 - rcvd0 == 2  # the first G and the counters() G; duplicates not counted


def test_error_replies_are_cached_too(rtpproxy):
    p = rtpproxy()
    assert udp_exchange(p.udp_addr, b"e1 Z") == udp_exchange(p.udp_addr, b"e1 V")
    assert udp_exchange(p.udp_addr, b"e2").startswith(b"e2 E")


def test_udp_cookie_counts_toward_the_reply_size_limit(rtpproxy):
    p = rtpproxy()
    # ncmds_* move between the two commands
    steady = [name for name in STAT_NAMES if not name.startswith("ncmds_")]
    command = "Gv " + " ".join(sorted(steady, key=len, reverse=True)[:22])
    body = p.cmd(command).encode()
    assert 300 < len(body) < 1000
    room = 1024 - len(body) - 2  # the reply buffer holds cookie, space, body, LF, NUL
    fits, too_long = b"c" * (room - 1), b"c" * room
    assert udp_exchange(p.udp_addr, fits + b" " + command.encode()) == fits + b" " + body + b"\n"
    assert udp_exchange(p.udp_addr, too_long + b" " + command.encode()) == too_long + b" E25\n"


# ---------------------------------------------------------------- bad input


def test_binary_garbage_and_huge_datagrams(rtpproxy):
    p = rtpproxy()
    junk = bytes(range(256)) * 4
    reply = udp_exchange(p.udp_addr, b"g1 " + junk)
    assert reply.startswith(b"g1 E")
    big = b"big " + b"V" * 9000
    reply = udp_exchange(p.udp_addr, big)
    assert reply.startswith(b"big E") and reply.endswith(b"\n")
    assert p.cmd("V") == "20040107"


def test_stream_long_line_closes_connection(rtpproxy):
    port = free_tcp_port()
    p = rtpproxy("-s", f"tcp:127.0.0.1:{port}", "-s", f"udp:127.0.0.1:{free_udp_port()}")
    with stream_connect("tcp", ("127.0.0.1", port)) as s:
        try:
            s.sendall(b"V" * 9000)
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
    with stream_connect("tcp", ("127.0.0.1", port)) as s:
        s.sendall(b"V" * 8000 + b"\n" + b"V\n")
        reply = recv_until(s, 2)
        assert reply.startswith(b"E") and reply.endswith(VERSION)
    assert p.cmd("V") == "20040107"


def test_unix_one_shot_9000_bytes(rtpproxy):
    p = rtpproxy(ctrl="unix")
    try:  # one read of 8191 bytes; the unread rest may reset the connection
        assert one_shot(p.unix_path, b"V " + b"x" * 9000).startswith(b"E")
    except ConnectionResetError:
        pass
    assert one_shot(p.unix_path, b"V") == VERSION


def test_silent_and_early_disconnecting_clients(rtpproxy):
    d = short_tmpdir()
    cpath, upath = os.path.join(d, "c.sock"), os.path.join(d, "u.sock")
    p = rtpproxy("-s", f"cunix:{cpath}", "-s", f"unix:{upath}")
    silent = [stream_connect("unix", cpath), stream_connect("unix", upath)]
    for path in (cpath, upath):
        s = stream_connect("unix", path)
        s.sendall(b"V\n" * 50)
        s.close()  # gone before the replies
    assert one_shot(upath, b"V") == VERSION
    with stream_connect("unix", cpath) as s:
        s.sendall(b"V\n")
        assert recv_until(s, 1) == VERSION
    for s in silent:
        s.close()
    assert p.alive()


def test_hundred_stream_clients_at_once(rtpproxy):
    port = free_tcp_port()
    udp = free_udp_port()
    p = rtpproxy("-s", f"tcp:127.0.0.1:{port}", "-s", f"udp:127.0.0.1:{udp}")
    clients = [stream_connect("tcp", ("127.0.0.1", port)) for _ in range(100)]
    try:
        for s in clients:
            s.sendall(b"V\n")
        for s in clients:
            assert recv_until(s, 1) == VERSION
        idle = [stream_connect("tcp", ("127.0.0.1", port)) for _ in range(300)]
        with stream_connect("tcp", ("127.0.0.1", port)) as s:
            s.sendall(b"V\n")
            assert recv_until(s, 1) == VERSION  # idle connections never lock others out
        for s in idle:
            s.close()
    finally:
        for s in clients:
            s.close()
    assert udp_exchange(("127.0.0.1", udp), b"z V") == b"z " + VERSION
    assert p.alive()


# ---------------------------------------------------------------- ownership


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to chown")
def test_unix_socket_owner_and_mode_with_u_and_w(rtpproxy):
    d = short_tmpdir()
    os.chmod(d, 0o755)
    path = os.path.join(d, "own.sock")
    udp = ("-s", f"udp:127.0.0.1:{free_udp_port()}")
    p = rtpproxy("-s", f"cunix:{path}", *udp, "-u", "nobody:nogroup", "-w", "432")
    st = os.stat(path)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (pwd.getpwnam("nobody").pw_uid, 0o660)
    p.stop()
    path2 = os.path.join(d, "own2.sock")
    udp = ("-s", f"udp:127.0.0.1:{free_udp_port()}")
    rtpproxy("-s", f"cunix:{path2}", *udp, "-u", "nobody:nogroup")
    assert stat.S_IMODE(os.stat(path2).st_mode) == 0o755
    path3 = os.path.join(d, "own3.sock")
    udp = ("-s", f"udp:127.0.0.1:{free_udp_port()}")
    rtpproxy("-s", f"cunix:{path3}", *udp, "-u", "nobody")
    st = os.stat(path3)
    assert st.st_gid == pwd.getpwnam("nobody").pw_gid  # the user's primary group


def test_v_after_many_commands_is_fast(rtpproxy):
    p = rtpproxy()
    start = time.monotonic()
    for _ in range(200):
        assert p.cmd("V") == "20040107"
    assert time.monotonic() - start < 10
