"""Hardening: the control plane never locks up, load and faults around the daemon do not
hurt media or other clients, and hostile traffic cannot take a call over."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import (
    UdpClient,
    free_tcp_port,
    free_udp_port,
    next_port_range,
    pid_alive,
    short_tmpdir,
)
from integration.media_util import Call, kamailio_call, open_fds, rtp

pytestmark = pytest.mark.timeout(120)


def udp_cmd(addr: tuple, text: bytes, timeout: float = 2.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(text, addr)
        return s.recv(65536)


def stream_cmd(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        data += chunk
    return data


def oneshot(path: str, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


def is_port(reply: str) -> bool:
    return reply.split()[0].isdigit()


def wide_port_range(blocks: int) -> tuple[int, int]:
    """Several adjacent blocks of the per-daemon port ranges."""
    ranges = [next_port_range() for _ in range(blocks)]
    low = ranges[0][0]
    if ranges[-1][0] != low + (blocks - 1) * (ranges[0][1] + 1 - low):
        ranges = [next_port_range() for _ in range(blocks)]
        low = ranges[0][0]
    return low, low + blocks * (ranges[0][1] + 1 - low) - 1


def timed_v(proxy) -> float:
    start = time.monotonic()
    assert proxy.cmd("V", timeout=2.0, retries=1) == "20040107"
    return time.monotonic() - start


def assert_log_clean(proxy) -> None:
    text = proxy.stderr_text()
    for word in ("Traceback", "crashed", "died", "command failed"):
        assert word not in text, text[-3000:]


# ------------------------------------------------------- control plane never locks up


def test_dozens_of_one_shot_clients_at_once_are_all_served(rtpproxy):
    """Every Kamailio process opens a unix connection per command."""
    tmp = short_tmpdir()
    path = os.path.join(tmp, "ctl.sock")
    proxy = rtpproxy("-s", f"unix:{path}", "-l", "127.0.0.1")
    errors: list[str] = []

    def client(n: int) -> None:
        try:
            for i in range(25):
                cid = f"k{n}-{i}"
                port = oneshot(path, f"U {cid} 127.0.0.1 4000 ft".encode())
                if not port.rstrip(b"\n").split()[0].isdigit():
                    errors.append(f"U {cid}: {port!r}")
                reply = oneshot(path, f"D {cid} ft".encode())
                if reply != b"0\n":
                    errors.append(f"D {cid}: {reply!r}")
        except OSError as exc:
            errors.append(f"client {n}: {exc!r}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(48)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:5]
    assert time.monotonic() - start < 60
    assert oneshot(path, b"G nsess_created nsess_destroyed") == b"1200 1200\n"
    assert_log_clean(proxy)


def test_idle_and_abusive_stream_connections_do_not_stall_other_clients(rtpproxy):
    tmp = short_tmpdir()
    cunix = os.path.join(tmp, "c.sock")
    tcp_port = free_tcp_port()
    udp_port = free_udp_port()
    proxy = rtpproxy(
        "-s", f"udp:127.0.0.1:{udp_port}",
        "-s", f"cunix:{cunix}",
        "-s", f"tcp:127.0.0.1:{tcp_port}",
    )  # fmt: skip
    hogs: list[socket.socket] = []
    try:
        for i in range(400):  # idle: connect and say nothing
            if i % 2:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(cunix)
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.connect(("127.0.0.1", tcp_port))
            hogs.append(s)
        for i in range(100):  # garbage without LF, some of it over the 8 KiB line limit
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(cunix)
            s.sendall(os.urandom(3000 if i % 2 else 9000).replace(b"\n", b"x"))
            hogs.append(s)
        # Everyone else is still served at once: UDP, and a new stream client.
        assert timed_v(proxy) < 0.5
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(2)
            c.connect(cunix)
            assert stream_cmd(c, b"V\n") == b"20040107\n"
            # An over-long word on a line that fits: an error reply, the connection lives.
            assert re.fullmatch(rb"E\d+\n", stream_cmd(c, b"U " + b"w" * 8000 + b" x\n"))
            assert stream_cmd(c, b"V\n") == b"20040107\n"
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=2) as c:
            assert stream_cmd(c, b"G nsess_created\n") == b"0\n"
        # An over-long cookie still gets its reply.
        cookie = b"c" * 7000
        assert udp_cmd(proxy.udp_addr, cookie + b" V") == cookie + b" 20040107\n"
        assert udp_cmd(proxy.udp_addr, cookie + b"x") == cookie + b"x E5\n"
    finally:
        for s in hogs:
            s.close()
    assert timed_v(proxy) < 0.5
    assert_log_clean(proxy)


def test_flood_of_idle_connections_never_cuts_off_a_working_controller(rtpproxy):
    tmp = short_tmpdir()
    cunix = os.path.join(tmp, "c.sock")
    proxy = rtpproxy(
        "-l", "127.0.0.1", "-s", f"cunix:{cunix}", "-s", f"udp:127.0.0.1:{free_udp_port()}"
    )
    good = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    good.settimeout(2)
    good.connect(cunix)
    assert is_port(stream_cmd(good, b"U flood 127.0.0.1 4000 f\n").decode())
    hogs: list[socket.socket] = []
    try:
        for _ in range(300):  # more than a listener serves at once
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(cunix)
            hogs.append(s)
        time.sleep(0.3)
        # The controller, silent while the flood came in, keeps working during it.
        assert stream_cmd(good, b"G nsess_created\n") == b"1\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as late:
            late.settimeout(2)
            late.connect(cunix)  # a newcomer is served too, at the expense of an idle one
            assert stream_cmd(late, b"V\n") == b"20040107\n"
        assert stream_cmd(good, b"D flood f\n") == b"0\n"
    finally:
        for s in hogs:
            s.close()
    assert stream_cmd(good, b"V\n") == b"20040107\n"  # and after it
    good.close()
    assert "dropping an idle control connection" in proxy.stderr_text()
    assert_log_clean(proxy)


def test_line_over_the_buffer_without_lf_closes_only_that_connection(rtpproxy):
    tmp = short_tmpdir()
    cunix = os.path.join(tmp, "c.sock")
    rtpproxy("-s", f"cunix:{cunix}", "-s", f"udp:127.0.0.1:{free_udp_port()}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as good:
        good.settimeout(2)
        good.connect(cunix)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bad:
            bad.settimeout(2)
            bad.connect(cunix)
            bad.sendall(b"V" * 20000)
            try:
                assert bad.recv(100) == b""  # closed, no reply
            except ConnectionResetError:
                pass  # closed with our bytes unread
        assert stream_cmd(good, b"V\n") == b"20040107\n"


def test_exhausted_port_range_recovers_as_soon_as_sessions_end(rtpproxy):
    low, _ = next_port_range()
    proxy = rtpproxy("-l", "127.0.0.1", "-T", "1", "-W", "1", ports=(low, low + 7))
    ports = [proxy.cmd(f"U full{i} 127.0.0.1 4000 t") for i in range(4)]
    assert all(p.split()[0].isdigit() for p in ports), ports
    assert proxy.cmd("U full9 127.0.0.1 4000 t") == "E72"
    assert proxy.cmd("G nsess_refused_ports nsess_refused_fds") == "1 0"
    assert "can't allocate a port pair: range exhausted" in proxy.stderr_text()
    assert timed_v(proxy) < 0.5  # refusing sessions never stalls the control plane
    deadline = time.monotonic() + 5
    while proxy.cmd("U full9 127.0.0.1 4000 t") == "E72":
        assert time.monotonic() < deadline, "ports were not given back after the timeouts"
        time.sleep(0.1)
    assert proxy.cmd("G nsess_timeout") == "4"


# ------------------------------------------------------- control load does not hurt media

FLOOD = r"""
import os, socket, sys, time
addr = ("127.0.0.1", int(sys.argv[1]))
rate, seconds = int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
verbs = ["U f{n} 127.0.0.1 5000 a", "L f{n} 127.0.0.1 5002 a b", "Q f{n} a b",
         "D f{n} a", "G nsess_created npkts_rcvd"]
start = time.monotonic()
n = sent = 0
while (now := time.monotonic()) - start < seconds:
    due = int((now - start) * rate)
    while sent < due:
        n += 1
        line = verbs[n % len(verbs)].format(n=n // 5 % 300)
        try:
            s.sendto(b"%d %s" % (n, line.encode()), addr)
        except BlockingIOError:
            pass
        sent += 1
    try:
        while s.recv(4096):
            pass
    except BlockingIOError:
        pass
    time.sleep(0.001)
print(sent)
"""


def control_socket_skmem(port: int) -> dict[str, int]:
    out = subprocess.run(
        ["ss", "-uamn", "sport", "=", f":{port}"], capture_output=True, text=True
    ).stdout
    match = re.search(r"skmem:\(([^)]*)\)", out)
    assert match, out
    return {m[0]: int(m[1]) for m in re.findall(r"([a-z]+)(\d+)", match.group(1))}


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def drain(calls: list, received: list[int]) -> None:
    """Count into received[i] every packet waiting on the B side of calls[i]."""
    for i, call in enumerate(calls):
        try:
            while call.b.sock.recv(2048):
                received[i] += 1
        except BlockingIOError:
            pass


def test_command_flood_does_not_cost_media_packets(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1", ports=wide_port_range(3))
    calls = [kamailio_call(proxy) for _ in range(100)]
    for call in calls:  # latch both legs
        call.a_to_b(rtp(0, 0, 1, b"l" * 20))
        call.b_to_a(rtp(0, 0, 2, b"l" * 20))
    for call in calls:
        call.b.sock.setblocking(False)
    pid = proxy.pid
    rss_before = rss_kib(pid)
    seconds, pps = 4.0, 50
    flood = subprocess.Popen(
        [sys.executable, "-c", FLOOD, str(proxy.udp_addr[1]), "10000", str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)  # the flood is on
    received = [0] * len(calls)
    sent = 0
    start = time.monotonic()
    next_tick = start
    seq = 1
    while time.monotonic() - start < seconds - 0.6:
        for call in calls:
            call.a.send(rtp(seq, seq * 160, 1, b"m" * 160), (call.addr, call.port_b))
        sent += 1
        seq += 1
        next_tick += 1 / pps
        while time.monotonic() < next_tick:
            drain(calls, received)
            time.sleep(0.002)
    deadline = time.monotonic() + 3
    while min(received) < sent and time.monotonic() < deadline:
        drain(calls, received)
        time.sleep(0.01)
    flood_sent = int(flood.communicate(timeout=30)[0])
    assert flood_sent > 30000
    lost = sum(sent - r for r in received)
    assert lost == 0, f"{lost} of {sent * len(calls)} media packets lost under the flood"
    skmem = control_socket_skmem(proxy.udp_addr[1])
    assert skmem["rb"] <= 256 * 1024, skmem  # a modest kernel queue ...
    assert rss_kib(pid) - rss_before < 64 * 1024  # ... and nothing piles up in the process
    assert timed_v(proxy) < 0.5
    assert_log_clean(proxy)


# ------------------------------------------------------- faults around the daemon


class NotifyTarget:
    """A unix listener playing a notification receiver that behaves in some way."""

    def __init__(self, path: str, mode: str) -> None:
        self.path = path
        self.mode = mode
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(64)
        self.lines: list[tuple[float, bytes]] = []
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                conn.close()
            elif self.mode == "never-read":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                self.conns.append(conn)
            else:
                threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        while chunk := conn.recv(65536):
            if self.mode == "slow":
                time.sleep(0.5)
            buf += chunk
            *lines, buf = buf.split(b"\n")
            self.lines += [(time.monotonic(), line) for line in lines]

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_bad_notify_targets_never_delay_a_good_one_nor_commands_nor_shutdown(rtpproxy):
    tmp = short_tmpdir()
    good = NotifyTarget(os.path.join(tmp, "good.sock"), "read")
    stuck = NotifyTarget(os.path.join(tmp, "stuck.sock"), "never-read")
    reset = NotifyTarget(os.path.join(tmp, "reset.sock"), "reset")
    slow = NotifyTarget(os.path.join(tmp, "slow.sock"), "slow")
    down = os.path.join(tmp, "down.sock")  # nobody listens
    tcp_down = f"tcp:127.0.0.1:{free_tcp_port()}"
    targets = [stuck.path, reset.path, slow.path, down]
    flags = ["-l", "127.0.0.1", "-T", "1", "-W", "1", "-n", f"unix:{good.path}", "-n", tcp_down]
    for path in targets:
        flags += ["-n", f"unix:{path}"]
    proxy = rtpproxy(*flags)
    big_tag = "x" * 6000  # 45 of them overflow the never-reading target's socket buffer
    per_target = {stuck.path: 45, reset.path: 10, slow.path: 10, down: 10}
    for path, count in per_target.items():
        for i in range(count):
            cmd = f"U bad{i}-{Path(path).stem} 127.0.0.1 4000 f t unix:{path} {big_tag}"
            assert is_port(proxy.cmd(cmd))
    for i in range(10):
        assert is_port(proxy.cmd(f"U bad{i}-tcp 127.0.0.1 4000 f t {tcp_down} tag"))
    created = time.monotonic()
    for i in range(5):
        assert is_port(proxy.cmd(f"U good{i} 127.0.0.1 4000 f t unix:{good.path} good{i}"))
    deadline = time.monotonic() + 8
    while len(good.lines) < 5 and time.monotonic() < deadline:
        assert timed_v(proxy) < 0.5  # commands stay prompt throughout
        time.sleep(0.1)
    assert sorted(line for _, line in good.lines) == [f"good{i}".encode() for i in range(5)]
    assert max(t for t, _ in good.lines) - created < 4.0  # -T 1 plus the 1 s sweep
    assert proxy.cmd("G nsess_timeout") == "90"
    while int(proxy.cmd("G nnotify_failed")) < 20:  # the unix and tcp targets that are down
        assert time.monotonic() < deadline, proxy.cmd("Gv nnotify_failed nnotify_dropped")
        time.sleep(0.1)
    assert "unable to send timeout notification to" in proxy.stderr_text()
    start = time.monotonic()
    assert proxy.stop(signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - start < 3.0
    for target in (good, stuck, reset, slow):
        target.close()
    assert_log_clean(proxy)


def test_copy_sockets_take_from_the_descriptor_budget_and_give_back(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1", "-L", "48")
    target = f"udp:127.0.0.1:{free_udp_port()}"
    made = []
    for i in range(30):
        if not is_port(proxy.cmd(f"U fd{i} 127.0.0.1 4000 f")):
            break
        made.append(f"fd{i}")
    assert made and len(made) < 30, "the descriptor limit was never reached"
    refused = int(proxy.cmd("G nsess_refused_fds"))
    assert proxy.cmd(f"C {made[0]} {target} f") == "E65"  # no descriptors for the copy
    assert int(proxy.cmd("G nsess_refused_fds")) == refused + 1
    assert proxy.cmd(f"D {made[-1]} f") == "0"
    assert proxy.cmd(f"C {made[0]} {target} f") == "0"  # the pair the D gave back
    assert proxy.cmd("U more 127.0.0.1 4000 f") == "E72"  # the copy holds it
    assert proxy.cmd(f"N {made[0]} f") == "0"
    assert is_port(proxy.cmd("U more 127.0.0.1 4000 f"))
    assert proxy.cmd(f"C {made[1]} {target} f") == "E65"
    assert proxy.cmd(f"D {made[1]} f") == "0"
    assert proxy.cmd(f"C {made[0]} {target} f") == "0"
    assert proxy.cmd(f"D {made[0]} f") == "0"  # gives back the leg's pair and the copy's
    assert is_port(proxy.cmd("U more2 127.0.0.1 4000 f"))
    assert is_port(proxy.cmd("U more3 127.0.0.1 4000 f"))
    assert proxy.cmd("U more4 127.0.0.1 4000 f") == "E72"
    assert timed_v(proxy) < 0.5


def test_descriptor_limit_too_low_fails_sessions_with_an_error_then_recovers(rtpproxy):
    tmp = short_tmpdir()
    cunix, unix = os.path.join(tmp, "c.sock"), os.path.join(tmp, "u.sock")
    proxy = rtpproxy(
        "-l", "127.0.0.1", "-L", "48",
        "-s", f"udp:127.0.0.1:{free_udp_port()}", "-s", f"cunix:{cunix}", "-s", f"unix:{unix}",
    )  # fmt: skip
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as early:
        early.settimeout(2)
        early.connect(cunix)  # a controller connected before the descriptors run out
        assert stream_cmd(early, b"V\n") == b"20040107\n"
        replies = [proxy.cmd(f"U lim{i} 127.0.0.1 4000 f") for i in range(30)]
        failed = [r for r in replies if not r.split()[0].isdigit()]
        assert failed, "the descriptor limit was never reached"
        assert set(failed) == {"E72"}, failed
        # The control plane keeps its reserve: every kind of client is still answered.
        assert timed_v(proxy) < 0.5
        counts = stream_cmd(early, b"G nsess_refused_fds nsess_refused_ports\n")
        refused_fds, refused_ports = map(int, counts.split())
        assert refused_fds > 0 and refused_fds + refused_ports == len(failed), counts
        for _ in range(20):
            assert oneshot(unix, b"V", timeout=2) == b"20040107\n"
        late = []
        for _ in range(4):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            late.append(c)
            c.settimeout(2)
            c.connect(cunix)
            assert stream_cmd(c, b"V\n") == b"20040107\n"
        for c in late:
            c.close()
        assert oneshot(unix, b"U lim-more 127.0.0.1 4000 f") == b"E72\n"
    text = proxy.stderr_text()
    lines = [ln for ln in text.splitlines() if "file descriptors in use" in ln]
    assert len(lines) == 1, text[-3000:]  # one clear line, not one per refusal
    assert lines[0].startswith("ERR:") and "-L" in lines[0], lines
    assert "Too many open files" not in text
    assert proxy.cmd("X") == "0"
    for i in range(5):
        assert proxy.cmd(f"U again{i} 127.0.0.1 4000 f").split()[0].isdigit()
    assert_log_clean(proxy)


def test_restart_after_sigkill_reuses_socket_path_and_pidfile(rtpproxy):
    tmp = short_tmpdir()
    sock = os.path.join(tmp, "ctl.sock")
    pidfile = os.path.join(tmp, "rtpproxy.pid")
    flags = ("-s", f"unix:{sock}", "-p", pidfile, "-l", "127.0.0.1")
    first = rtpproxy(*flags)
    first.cmd("U k1 127.0.0.1 4000 f")
    first.stop(signal.SIGKILL, timeout=5)
    assert os.path.exists(sock) and os.path.exists(pidfile)  # left behind by the kill
    second = rtpproxy(*flags)
    assert second.cmd("V") == "20040107"
    assert second.cmd("G nsess_created") == "0"
    assert int(Path(pidfile).read_text()) == second.pid
    assert second.stop() == 0
    assert not os.path.exists(sock) and not os.path.exists(pidfile)


# ------------------------------------------------------- hostile traffic


SSRC_A, SSRC_B = 0x0A0A0A0A, 0x0B0B0B0B


def latched_call(proxy, natted: bool = False):
    """A call whose four legs (RTP and RTCP) are latched by a few packets each way.

    `natted`: the SDP addresses are not where the phones send from, so every leg's
    address is learned from packets (commands never override it afterwards).
    """
    if natted:
        a, b = UdpClient(), UdpClient()
        cid = f"nat{os.urandom(4).hex()}"
        port_a = int(proxy.cmd(f"U {cid} 127.0.0.1 9 ftag;1").split()[0])
        port_b = int(proxy.cmd(f"L {cid} 127.0.0.1 11 ftag;1 ttag;1").split()[0])
        call = Call(proxy, cid, a, b, port_a, port_b)
        b.send(rtp(0, 0, SSRC_B, b"b" * 160), ("127.0.0.1", port_a))  # dropped: a unknown
        time.sleep(0.1)
    else:
        call = kamailio_call(proxy)
    for seq in range(1, 4):
        call.a_to_b(rtp(seq, seq * 160, SSRC_A, b"a" * 160))
        call.b_to_a(rtp(seq, seq * 160, SSRC_B, b"b" * 160))
    rtcp_a, rtcp_b = UdpClient(), UdpClient()
    if not natted:  # the guessed RTCP addresses are port+1 of the phones
        rtcp_a.close()
        rtcp_b.close()
        return call
    call.rtcp = (rtcp_a, rtcp_b)
    rtcp_b.send(RTCP_RR, ("127.0.0.1", port_a + 1))
    time.sleep(0.05)
    rtcp_a.send(RTCP_RR, ("127.0.0.1", port_b + 1))
    assert rtcp_b.recv()[0] == RTCP_RR
    rtcp_b.send(RTCP_RR, ("127.0.0.1", port_a + 1))
    assert rtcp_a.recv()[0] == RTCP_RR
    return call


RTCP_RR = bytes([0x80, 201, 0, 1]) + SSRC_A.to_bytes(4, "big")


def discards(proxy) -> int:
    return int(proxy.cmd("G npkts_discard"))


@pytest.mark.parametrize("natted", [False, True])
def test_rtp_bleed_packets_from_strangers_never_reach_either_party(rtpproxy, natted):
    proxy = rtpproxy("-l", "127.0.0.1")
    call = latched_call(proxy, natted)
    attacker = UdpClient()
    before = discards(proxy)
    ports = [call.port_a, call.port_b]
    if natted:
        ports += [call.port_a + 1, call.port_b + 1]
    for port in ports:
        for seq in range(4, 9):  # a plausible sequence number, but not their SSRC
            attacker.send(rtp(seq, 0, 0xBAD, b"!" * 160), (call.addr, port))
    assert call.a.recv_none(0.3) and call.b.recv_none(0.1) and attacker.recv_none(0.1)
    if natted:
        assert all(c.recv_none(0.1) for c in call.rtcp)
    assert discards(proxy) - before == 5 * len(ports)
    data, _ = call.a_to_b(rtp(9, 9 * 160, SSRC_A, b"a" * 160))  # the call is unaffected
    assert data[12:] == b"a" * 160
    data, _ = call.b_to_a(rtp(9, 9 * 160, SSRC_B, b"b" * 160))
    assert data[12:] == b"b" * 160


@pytest.mark.parametrize("natted", [False, True])
def test_repeated_unchanged_address_opens_no_relatch_window(rtpproxy, natted):
    proxy = rtpproxy("-l", "127.0.0.1")
    call = latched_call(proxy, natted)
    # A re-INVITE that repeats the caller's address, as controllers do all the time.
    sdp_port = 9 if natted else call.a.port
    proxy.cmd(f"U {call.call_id} 127.0.0.1 {sdp_port} ftag;1 ttag;1")
    attacker = UdpClient()
    attacker.send(rtp(100, 0, 0xBAD, b"!" * 160), (call.addr, call.port_b))
    assert call.b.recv_none(0.3)
    data, _ = call.b_to_a(rtp(10, 1600, SSRC_B, b"b" * 160))  # still to the real caller
    assert data[12:] == b"b" * 160
    assert attacker.recv_none(0.1)


def test_changed_address_opens_the_relatch_window(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    call = latched_call(proxy, natted=True)
    moved = UdpClient()  # the caller moved (re-INVITE with a new address)
    proxy.cmd(f"U {call.call_id} 127.0.0.1 {moved.port} ftag;1 ttag;1")
    moved.send(rtp(50, 0, 0xC, b"c" * 160), (call.addr, call.port_b))
    data, _ = call.b.recv()
    assert data[12:] == b"c" * 160
    call.b.send(rtp(11, 1760, SSRC_B, b"b" * 160), (call.addr, call.port_a))
    data, _ = moved.recv()
    assert data[12:] == b"b" * 160
    assert call.a.recv_none(0.2)


def test_own_ssrc_with_near_sequence_moves_the_latch_after_nat_rebinding(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    call = latched_call(proxy, natted=True)
    rebound = UdpClient()  # the same phone, a new NAT port
    rebound.send(rtp(4, 640, SSRC_A, b"a" * 160), (call.addr, call.port_b))
    data, _ = call.b.recv()
    assert data[12:] == b"a" * 160
    call.b.send(rtp(12, 1920, SSRC_B, b"b" * 160), (call.addr, call.port_a))
    data, _ = rebound.recv()
    assert data[12:] == b"b" * 160
    # Someone with the right SSRC but a far sequence number does not move it.
    attacker = UdpClient()
    attacker.send(rtp(30000, 0, SSRC_A, b"!" * 160), (call.addr, call.port_b))
    assert call.b.recv_none(0.3)


def test_strict_source_never_moves_a_latched_leg(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1", "--strict-source")
    call = latched_call(proxy, natted=True)
    rebound = UdpClient()
    rebound.send(rtp(4, 640, SSRC_A, b"a" * 160), (call.addr, call.port_b))
    assert call.b.recv_none(0.3)
    proxy.cmd(f"U {call.call_id} 127.0.0.1 {rebound.port} ftag;1 ttag;1")
    rebound.send(rtp(5, 800, SSRC_A, b"a" * 160), (call.addr, call.port_b))
    assert call.b.recv_none(0.3)
    data, _ = call.a_to_b(rtp(6, 960, SSRC_A, b"a" * 160))
    assert data[12:] == b"a" * 160


def test_call_ids_and_tags_cannot_escape_the_record_directory(rtpproxy):
    base = short_tmpdir()
    record_dir = os.path.join(base, "a", "b", "rec")
    os.makedirs(record_dir)
    proxy = rtpproxy("-l", "127.0.0.1", "-r", record_dir)
    for cid, ftag in (("../../../x", "../../y"), ("/etc/z", "/"), ("..", ".."), ("%2e%2e/q", "t")):
        a, b = UdpClient(), UdpClient()
        port_a = proxy.cmd(f"U {cid} 127.0.0.1 {a.port} {ftag}").split()[0]
        port_b = proxy.cmd(f"L {cid} 127.0.0.1 {b.port} {ftag} tt").split()[0]
        assert proxy.cmd(f"R {cid} {ftag} tt") == "0"
        a.send(rtp(1, 0, 1, b"r" * 40), ("127.0.0.1", int(port_b)))
        b.recv()
        b.send(rtp(1, 0, 2, b"r" * 40), ("127.0.0.1", int(port_a)))
        a.recv()
        assert proxy.cmd(f"D {cid} {ftag} tt") == "0"
    files = [p for p in Path(base).rglob("*") if p.is_file()]
    assert files and all(p.parent == Path(record_dir) for p in files), files


@pytest.mark.parametrize(
    ("ctrl", "warned"), [("udp:127.0.0.1", False), ("udp:0.0.0.0", True), ("udp:*", True)]
)
def test_udp_control_open_to_the_network_without_u_warns(rtpproxy, ctrl, warned):
    port = free_udp_port("0.0.0.0")
    proxy = rtpproxy("-s", f"{ctrl}:{port}", wait=False)
    proxy.udp_addr = ("127.0.0.1", port)
    deadline = time.monotonic() + 10
    while True:
        try:
            if proxy.cmd("V", timeout=0.3, retries=1) == "20040107":
                break
        except OSError:
            pass
        assert time.monotonic() < deadline and pid_alive(proxy.pid), proxy.stderr_text()
    assert ("WARNING" in proxy.stderr_text() and "-u" in proxy.stderr_text()) is warned


def test_fd_count_is_flat_after_hostile_rounds(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    latched_call(proxy).delete()
    base = open_fds(proxy)
    for _ in range(20):
        call = latched_call(proxy)
        UdpClient().send(rtp(1, 0, 0xBAD, b"!" * 20), (call.addr, call.port_b))
        proxy.cmd(f"U {call.call_id} 127.0.0.1 9 ftag;1 ttag;1 && L 127.0.0.1 9 && D")
        call.close()
    assert proxy.cmd("I").splitlines()[1] == "active sessions: 0"
    assert open_fds(proxy) == base
