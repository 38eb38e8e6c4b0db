"""Recording through the live daemon: R, N, -a, -P, -S, errors, shutdown, extractaudio.

Every test sends real RTP through a real daemon and reads the files it wrote, with
the small parsers below (and tshark where it is installed).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import wave
from array import array
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import Proxy, UdpClient, internet_checksum, rtpproxy_command
from integration.media_util import Call, kamailio_call, rtp
from rtpp.tools import g711

pytestmark = pytest.mark.timeout(120)

ADHOC_HEAD = struct.Struct("=H")
PCAP_GLOBAL = struct.Struct("=IHHiIII")
PCAP_REC = struct.Struct("=IIII")
RTCP_SR = bytes([0x80, 200, 0, 6]) + bytes(range(24))


# --- file parsers ----------------------------------------------------------


@dataclass(frozen=True)
class Rec:
    """One recorded packet: sender (and for pcap receiver) address, time, UDP payload."""

    src: tuple[str, int]
    dst: tuple[str, int] | None
    time: float
    data: bytes


def parse_adhoc(path: str | Path) -> list[Rec]:
    """30-byte header records (OPERATIONS.md 3.5); the file must end on a record boundary."""
    blob = Path(path).read_bytes()
    out: list[Rec] = []
    at = 0
    while at < len(blob):
        assert len(blob) - at >= 30, f"{path}: truncated header at {at}"
        (family,) = ADHOC_HEAD.unpack_from(blob, at)
        port = struct.unpack_from("!H", blob, at + 2)[0]
        arrival, plen = struct.unpack_from("=dH", blob, at + 20)
        if family == 2:
            host = socket.inet_ntop(socket.AF_INET, blob[at + 4 : at + 8])
            assert blob[at + 8 : at + 20] == bytes(12)
        else:
            assert family == 10, f"{path}: family {family} at {at}"
            host = socket.inet_ntop(socket.AF_INET6, blob[at + 4 : at + 20])
        data = blob[at + 30 : at + 30 + plen]
        assert len(data) == plen, f"{path}: truncated packet at {at}"
        out.append(Rec((host, port), None, arrival, data))
        at += 30 + plen
    return out


def parse_pcap(path: str | Path) -> list[Rec]:
    """Classic pcap with synthetic Ethernet/IPv4/UDP frames; checksums are verified."""
    blob = Path(path).read_bytes()
    magic, major, minor, _, _, snaplen, linktype = PCAP_GLOBAL.unpack_from(blob)
    assert (magic, major, minor, snaplen, linktype) == (0xA1B2C3D4, 2, 4, 65535, 1)
    out: list[Rec] = []
    at = PCAP_GLOBAL.size
    while at < len(blob):
        sec, usec, incl, orig = PCAP_REC.unpack_from(blob, at)
        assert incl == orig and usec < 1_000_000
        frame = blob[at + 16 : at + 16 + incl]
        assert len(frame) == incl, f"{path}: truncated record at {at}"
        at += 16 + incl
        assert frame[12:14] == b"\x08\x00"
        ip, udp = frame[14:34], frame[34:]
        assert ip[0] == 0x45 and ip[8] == 127 and ip[9] == 17
        assert internet_checksum(ip) == 0xFFFF, "bad IPv4 header checksum"
        total_len = struct.unpack_from("!H", ip, 2)[0]
        assert total_len == 20 + len(udp)
        sport, dport, ulen, _ = struct.unpack_from("!HHHH", udp)
        assert ulen == len(udp)
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, ulen)
        assert internet_checksum(pseudo + udp) == 0xFFFF, "bad UDP checksum"
        assert frame[2:6] == ip[16:20] and frame[8:12] == ip[12:16]  # MACs from the IPs
        src = (socket.inet_ntoa(ip[12:16]), sport)
        dst = (socket.inet_ntoa(ip[16:20]), dport)
        out.append(Rec(src, dst, sec + usec / 1e6, udp[8:]))
    return out


def tshark_rtp(path: str | Path, ports: list[int]) -> list[tuple[str, ...]]:
    """(src port, dst port, rtp.seq, ip checksum status, udp checksum status) per frame."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    args = ["tshark", "-n", "-r", str(path)]
    args += ["-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"]
    for port in ports:
        args += ["-d", f"udp.port=={port},rtp"]
    args += ["-T", "fields", "-E", "separator=,"]
    for field in ("udp.srcport", "udp.dstport", "rtp.seq", "ip.checksum.status"):
        args += ["-e", field]
    args += ["-e", "udp.checksum.status"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [tuple(line.split(",")) for line in done.stdout.splitlines() if line]


# --- call helpers ------------------------------------------------------------


def payload(i: int, size: int | None = None) -> bytes:
    """Distinct payloads of varying (also odd) lengths."""
    n = size if size is not None else 20 + (i * 7) % 150
    return bytes((i * 31 + k) % 256 for k in range(n))


def caller_packets(call: Call, count: int, first: int = 0, ssrc: int = 0x1111) -> list[bytes]:
    sent = []
    for i in range(first, first + count):
        pkt = rtp(i, i * 160, ssrc, payload(i))
        data, _ = call.a_to_b(pkt)
        assert data == pkt
        sent.append(pkt)
    return sent


def callee_packets(call: Call, count: int, first: int = 0, ssrc: int = 0x2222) -> list[bytes]:
    sent = []
    for i in range(first, first + count):
        pkt = rtp(5000 + i, i * 160, ssrc, payload(i + 3))
        data, _ = call.b_to_a(pkt)
        assert data == pkt
        sent.append(pkt)
    return sent


def send_rtcp(call: Call, from_caller: bool, data: bytes = RTCP_SR) -> UdpClient:
    """An RTCP SR from the caller (to the L port + 1) or the callee (U port + 1), once
    the daemon has read it."""
    client = UdpClient()
    port = (call.port_b if from_caller else call.port_a) + 1
    before = stat(call.proxy, "npkts_rcvd")
    client.send(data, ("127.0.0.1", port))
    wait_for(lambda: stat(call.proxy, "npkts_rcvd") > before, what="the RTCP packet")
    return client


def media_call(proxy, call_id: str, index: int) -> Call:
    """Media stream `index` of a call: tags `ftag;<index>` / `ttag;<index>`."""
    a, b = UdpClient(), UdpClient()
    ftag, ttag = f"ftag;{index}", f"ttag;{index}"
    port_a = int(proxy.cmd(f"U {call_id} 127.0.0.1 {a.port} {ftag}").split()[0])
    port_b = int(proxy.cmd(f"L {call_id} 127.0.0.1 {b.port} {ftag} {ttag}").split()[0])
    return Call(proxy, call_id, a, b, port_a, port_b, ftag=ftag, ttag=ttag)


def wait_for(predicate, timeout: float = 3.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def stat(proxy, name: str) -> int:
    return int(proxy.cmd(f"G {name}"))


def name(call: Call, suffix: str) -> str:
    return f"{call.call_id}={call.ftag.split(';')[0]}.{suffix}"


def packets_in(path: Path, parse=None) -> list[bytes] | None:
    """The payloads recorded in `path`, or None while it is missing or incomplete."""
    try:
        return [r.data for r in (parse or parse_adhoc)(path)]
    except (OSError, AssertionError, struct.error):
        return None


def wait_recorded(path: Path, sent: list[bytes], parse=None, timeout: float = 5.0) -> None:
    """Wait until `path` holds exactly the packets `sent`.

    The daemon's writer thread flushes, closes and moves a recording just after the
    command that ended it (D, N) has been answered.
    """
    wait_for(lambda: packets_in(path, parse) == sent, timeout, what=f"{path.name} complete")


def wait_empty(directory: Path, timeout: float = 5.0) -> None:
    """Wait until every recording has been moved out of a spool directory."""
    wait_for(lambda: not any(directory.iterdir()), timeout, what=f"{directory} empty")


def log_lines(proxy, needle: str) -> list[str]:
    return [line for line in proxy.stderr_text().splitlines() if needle in line]


def assert_relaying(call: Call, seq: int = 900) -> None:
    """Both directions still relay and the daemon still answers commands."""
    caller_packets(call, 1, first=seq)
    callee_packets(call, 1, first=seq)
    assert call.proxy.cmd("V") == "20040107"


_made: list[Path] = []


def new_dir(tag: str) -> Path:
    """A fresh directory, removed by the autouse fixture after the test."""
    path = Path(tempfile.mkdtemp(prefix=f"rprec-{tag}-"))
    _made.append(path)
    return path


def recording_call(rtpproxy, tag: str, *flags: str) -> tuple[Path, Proxy, Call]:
    """A daemon on 127.0.0.1 recording into a fresh new_dir(tag), with one call set up."""
    rec = new_dir(tag)
    proxy = rtpproxy("-l", "127.0.0.1", "-r", str(rec), *flags)
    return rec, proxy, kamailio_call(proxy)


@pytest.fixture(autouse=True)
def _remove_dirs():
    yield
    while _made:
        shutil.rmtree(_made.pop(), ignore_errors=True)


@contextmanager
def tmpfs(size: str, read_only: bool = False):
    """A fresh tmpfs of `size` (root only); unmounted and removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = Path(tempfile.mkdtemp(prefix="rprec-tmpfs-"))
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        path.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


def check_adhoc(recs: list[Rec], sent: list[bytes], sender: tuple, t0: float, t1: float) -> None:
    assert [r.data for r in recs] == sent
    for r in recs:
        assert r.src == sender
        assert t0 - 1 <= r.time <= t1 + 1


# --- R and the ad-hoc format -------------------------------------------------


def test_r_records_each_direction_in_adhoc_files(rtpproxy):
    rec, proxy, call = recording_call(rtpproxy, "r")
    t0 = time.time()
    assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "0"
    sent_a = caller_packets(call, 40)
    callee_packets(call, 5)  # not recorded yet
    assert proxy.cmd(f"R {call.call_id} ttag;1 ftag;1") == "0"
    sent_b = callee_packets(call, 30, first=5)
    send_rtcp(call, from_caller=True)
    assert call.delete() == "0"
    t1 = time.time()
    for suffix, want in (("o.rtp", sent_a), ("a.rtp", sent_b), ("o.rtcp", [RTCP_SR])):
        wait_recorded(rec / name(call, suffix), want)
    files = sorted(p.name for p in rec.iterdir())
    assert files == sorted(name(call, s) for s in ("o.rtp", "a.rtp", "o.rtcp", "a.rtcp"))
    check_adhoc(parse_adhoc(rec / name(call, "o.rtp")), sent_a, call.a.addr, t0, t1)
    check_adhoc(parse_adhoc(rec / name(call, "a.rtp")), sent_b, call.b.addr, t0, t1)
    rtcp = parse_adhoc(rec / name(call, "o.rtcp"))
    assert [r.data for r in rtcp] == [RTCP_SR]
    assert (rec / name(call, "a.rtcp")).stat().st_size == 0
    size = sum(30 + len(p) for p in sent_a)
    assert (rec / name(call, "o.rtp")).stat().st_size == size


def test_dash_capital_r_writes_no_rtcp_files(rtpproxy):
    rec, proxy, call = recording_call(rtpproxy, "R", "-R")
    assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "0"
    assert proxy.cmd(f"R {call.call_id} ttag;1 ftag;1") == "0"
    sent = caller_packets(call, 3)
    send_rtcp(call, from_caller=True)
    assert call.delete() == "0"
    wait_recorded(rec / name(call, "o.rtp"), sent)
    assert sorted(p.name for p in rec.iterdir()) == sorted(
        [name(call, "o.rtp"), name(call, "a.rtp")]
    )
    assert [r.data for r in parse_adhoc(rec / name(call, "o.rtp"))] == sent


def test_r_errors(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1")
    call = kamailio_call(proxy)
    assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "E50"  # no -r
    assert log_lines(proxy, "directory for saving local recordings is not configured")
    rec = new_dir("rerr")
    proxy = rtpproxy("-l", "127.0.0.1", "-r", str(rec))
    assert proxy.cmd("R nosuch ftag ttag") == "E50"
    assert proxy.cmd("N nosuch ftag ttag") == "E50"
    call = kamailio_call(proxy)
    assert proxy.cmd(f"N {call.call_id} ftag;1 ttag;1") == "E50"  # nothing recorded
    assert list(rec.iterdir()) == []
    assert proxy.cmd("Gv nrec_errors nrec_spool_copies nrec_pkts_dropped") == (
        "nrec_errors=0 nrec_spool_copies=0 nrec_pkts_dropped=0"
    )


# --- pcap ----------------------------------------------------------------------


def test_pcap_per_stream_files(rtpproxy):
    rec, proxy, call = recording_call(rtpproxy, "P", "-P")
    assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "0"
    assert proxy.cmd(f"R {call.call_id} ttag;1 ftag;1") == "0"
    sent_a = caller_packets(call, 25)  # odd and even lengths
    sent_b = callee_packets(call, 25)
    assert call.delete() == "0"
    wait_recorded(rec / name(call, "o.rtp"), sent_a, parse_pcap)
    wait_recorded(rec / name(call, "a.rtp"), sent_b, parse_pcap)
    recs_a = parse_pcap(rec / name(call, "o.rtp"))
    assert [r.data for r in recs_a] == sent_a
    assert {(r.src, r.dst) for r in recs_a} == {(call.a.addr, ("127.0.0.1", call.port_b))}
    recs_b = parse_pcap(rec / name(call, "a.rtp"))
    assert [r.data for r in recs_b] == sent_b
    assert {(r.src, r.dst) for r in recs_b} == {(call.b.addr, ("127.0.0.1", call.port_a))}
    assert (rec / name(call, "o.rtcp")).stat().st_size == 24
    rows = tshark_rtp(rec / name(call, "o.rtp"), [call.port_b])
    assert [int(r[2]) for r in rows] == list(range(25))
    assert {r[3:] for r in rows} == {("1", "1")}  # IP and UDP checksums good


def test_pcap_single_file_holds_both_directions(rtpproxy):
    rec, proxy, call = recording_call(rtpproxy, "Ps", "-P")
    assert proxy.cmd(f"Rs {call.call_id} ftag;1 ttag;1") == "0"
    assert proxy.cmd(f"Rs {call.call_id} ttag;1 ftag;1") == "0"
    assert proxy.cmd(f"Rs {call.call_id} ttag;1 ftag;1") == "E50"  # already recorded
    sent = []
    for i in range(20):
        sent += caller_packets(call, 1, first=i) + callee_packets(call, 1, first=i)
    # RTCP both ways so each side's RTCP leg has a latched address.
    rtcp_b = send_rtcp(call, from_caller=False)
    send_rtcp(call, from_caller=True, data=RTCP_SR[::-1])
    data, _ = rtcp_b.recv()
    assert data == RTCP_SR[::-1]
    assert call.delete() == "0"
    wait_for(lambda: len(packets_in(rec / name(call, "pcap"), parse_pcap) or ()) == 42)
    assert [p.name for p in rec.iterdir()] == [name(call, "pcap")]
    recs = parse_pcap(rec / name(call, "pcap"))
    rtp_recs = [r for r in recs if r.dst[1] in (call.port_a, call.port_b)]
    assert [r.data for r in rtp_recs] == sent
    src_dst = {(r.src, r.dst) for r in rtp_recs}
    assert src_dst == {
        (call.a.addr, ("127.0.0.1", call.port_b)),
        (call.b.addr, ("127.0.0.1", call.port_a)),
    }
    rtcp = [r for r in recs if r not in rtp_recs]
    # RTCP is seen as sent onward: the proxy's RTCP port on the far side -> that party
    # (the caller's RTCP address is still the signalled port + 1, the callee's latched).
    assert [(r.src, r.dst, r.data) for r in rtcp] == [
        (("127.0.0.1", call.port_b + 1), ("127.0.0.1", call.a.port + 1), RTCP_SR),
        (("127.0.0.1", call.port_a + 1), rtcp_b.addr, RTCP_SR[::-1]),
    ]
    rows = tshark_rtp(rec / name(call, "pcap"), [call.port_a, call.port_b])
    assert len(rows) == len(recs)
    assert sorted(int(r[2]) for r in rows if r[2]) == sorted(
        [i for i in range(20)] + [5000 + i for i in range(20)]
    )


def test_dash_a_records_every_session_from_creation(rtpproxy):
    rec, proxy, call = recording_call(rtpproxy, "a", "-a")
    sent_a = caller_packets(call, 10)
    sent_b = callee_packets(call, 10)
    assert call.delete() == "0"
    wait_recorded(rec / name(call, "o.rtp"), sent_a)
    wait_recorded(rec / name(call, "a.rtp"), sent_b)
    assert [r.data for r in parse_adhoc(rec / name(call, "o.rtp"))] == sent_a
    assert [r.data for r in parse_adhoc(rec / name(call, "a.rtp"))] == sent_b
    assert len(list(rec.iterdir())) == 4


def test_dash_a_with_pcap_writes_one_file(rtpproxy):
    rec, proxy, call = recording_call(rtpproxy, "aP", "-a", "-P", "-R")
    sent = []
    for i in range(10):
        sent += caller_packets(call, 1, first=i) + callee_packets(call, 1, first=i)
    assert call.delete() == "0"
    wait_recorded(rec / name(call, "pcap"), sent, parse_pcap)
    assert [p.name for p in rec.iterdir()] == [name(call, "pcap")]


# --- spool -------------------------------------------------------------------------


def _spool_call(rtpproxy, spool: Path, rec: Path, *extra: str) -> None:
    proxy = rtpproxy("-l", "127.0.0.1", "-r", str(rec), "-S", str(spool), *extra)
    call = kamailio_call(proxy)
    assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "0"
    sent = caller_packets(call, 60)
    assert (spool / name(call, "o.rtp")).exists()
    assert not (rec / name(call, "o.rtp")).exists()
    assert call.delete() == "0"
    wait_empty(spool)
    assert sorted(p.name for p in rec.iterdir()) == sorted(
        [name(call, "o.rtp"), name(call, "o.rtcp")]
    )
    assert list(spool.iterdir()) == []
    assert [r.data for r in parse_adhoc(rec / name(call, "o.rtp"))] == sent
    return proxy


def test_spool_file_moves_into_record_dir_at_delete(rtpproxy):
    _spool_call(rtpproxy, new_dir("spool"), new_dir("final"))


def test_spool_on_another_file_system_still_ends_in_record_dir(rtpproxy):
    with tmpfs("4m") as spool:
        proxy = _spool_call(rtpproxy, spool, new_dir("final"))
        wait_for(lambda: len(log_lines(proxy, "different file systems")) == 2)
        assert stat(proxy, "nrec_spool_copies") == 2 and stat(proxy, "nrec_errors") == 0


# --- N -----------------------------------------------------------------------------


def test_n_closes_the_file_and_later_packets_are_not_written(rtpproxy):
    rec, proxy, call = recording_call(rtpproxy, "N")
    assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "0"
    sent = caller_packets(call, 5)
    assert proxy.cmd(f"N {call.call_id} ftag;1 ttag;1") == "0"
    # Closed and complete while the call goes on.
    wait_recorded(rec / name(call, "o.rtp"), sent)
    caller_packets(call, 5, first=5)
    assert proxy.cmd(f"N {call.call_id} ftag;1 ttag;1") == "E50"
    assert call.delete() == "0"
    assert [r.data for r in parse_adhoc(rec / name(call, "o.rtp"))] == sent


def test_na_stops_both_directions(rtpproxy):
    rec, proxy, call = recording_call(rtpproxy, "Na", "-P")
    assert proxy.cmd(f"Rs {call.call_id} ftag;1 ttag;1") == "0"
    assert proxy.cmd(f"Rs {call.call_id} ttag;1 ftag;1") == "0"
    sent = caller_packets(call, 3) + callee_packets(call, 3)
    assert proxy.cmd(f"Na {call.call_id} ttag;1 ftag;1") == "0"
    wait_recorded(rec / name(call, "pcap"), sent, parse_pcap)
    caller_packets(call, 3, first=3)
    callee_packets(call, 3, first=3)
    assert proxy.cmd(f"Na {call.call_id} ftag;1 ttag;1") == "E50"
    assert call.delete() == "0"
    assert [r.data for r in parse_pcap(rec / name(call, "pcap"))] == sent


# --- names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call_id", "ftag"),
    [("../../x", "ftag"), ("a/b", "f/t"), ("..", "../.."), ("x", "/etc/passwd")],
)
def test_hostile_names_stay_inside_the_record_dir(rtpproxy, call_id, ftag):
    outer = new_dir("names")
    rec = outer / "d1" / "d2"
    rec.mkdir(parents=True)
    proxy = rtpproxy("-l", "127.0.0.1", "-r", str(rec), "-P")
    a, b = UdpClient(), UdpClient()
    port_a = int(proxy.cmd(f"U {call_id} 127.0.0.1 {a.port} {ftag}").split()[0])
    port_b = int(proxy.cmd(f"L {call_id} 127.0.0.1 {b.port} {ftag} t/t").split()[0])
    call = Call(proxy, call_id, a, b, port_a, port_b, ftag=ftag, ttag="t/t")
    assert proxy.cmd(f"R {call_id} {ftag} t/t") == "0"
    assert proxy.cmd(f"Rs {call_id} t/t {ftag}") == "0"
    assert proxy.cmd(f"C {call_id} ../../../copy {ftag} t/t") == "0"
    sent = caller_packets(call, 3)
    assert proxy.cmd(f"D {call_id} {ftag} t/t") == "0"
    originator = [p for p in rec.iterdir() if p.name.endswith(".o.rtp")]
    wait_recorded(originator[0], sent, parse_pcap)
    wait_for(lambda: sum(p.is_file() for p in outer.rglob("*")) == 5)
    everything = [p for p in outer.rglob("*")]
    files = [p for p in everything if p.is_file()]
    assert len(files) == 5
    for path in files:
        assert os.path.realpath(path).startswith(os.path.realpath(rec) + os.sep)
        assert path.parent == rec
    assert {p for p in everything if p.is_dir()} == {outer / "d1", rec}
    originator = [p for p in files if p.name.endswith(".o.rtp")]
    assert [r.data for r in parse_pcap(originator[0])] == sent


# --- failures ------------------------------------------------------------------------


def test_missing_record_dir(rtpproxy):
    rec = new_dir("gone")
    rec.rmdir()
    proxy = rtpproxy("-l", "127.0.0.1", "-r", str(rec))
    call = kamailio_call(proxy)
    assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "E50"
    assert len(log_lines(proxy, "can't open file")) == 1
    assert stat(proxy, "nrec_errors") == 1
    assert_relaying(call)
    assert not rec.exists()


@pytest.mark.parametrize("pcap", [False, True])
def test_read_only_record_dir(rtpproxy, pcap):
    with tmpfs("1m", read_only=True) as rec:
        flags = ["-P"] if pcap else []
        proxy = rtpproxy("-l", "127.0.0.1", "-r", str(rec), *flags)
        call = kamailio_call(proxy)
        commands = [
            (f"R {call.call_id} ftag;1 ttag;1", "E50"),
            (f"Rs {call.call_id} ttag;1 ftag;1", "E50"),
            (f"C {call.call_id} mycopy ftag;1 ttag;1", "E65"),
            (f"Cs {call.call_id} onefile ttag;1 ftag;1", "E65"),
        ]
        for count, (command, error) in enumerate(commands, 1):
            assert proxy.cmd(command) == error, command
            lines = log_lines(proxy, "can't open file")
            assert len(lines) == count, lines  # one line per failed command
            assert "Read-only file system" in lines[-1]
            assert stat(proxy, "nrec_errors") == count
        assert_relaying(call)
        assert call.delete() == "0"
        assert list(rec.iterdir()) == []


def test_record_dir_removed_mid_call(rtpproxy):
    rec, proxy, call = recording_call(rtpproxy, "rm")
    assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "0"
    caller_packets(call, 40)
    shutil.rmtree(rec)
    caller_packets(call, 40, first=40)
    assert_relaying(call)
    assert call.delete() == "0"
    assert proxy.cmd("V") == "20040107"
    wait_for(lambda: len(log_lines(proxy, "removed while recording")) == 2)  # RTP and RTCP
    assert not rec.exists()


def test_record_dir_removed_mid_call_with_spool_keeps_the_recording(rtpproxy):
    spool, rec = new_dir("sp"), new_dir("rmf")
    proxy = rtpproxy("-l", "127.0.0.1", "-r", str(rec), "-S", str(spool))
    call = kamailio_call(proxy)
    assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "0"
    sent = caller_packets(call, 20)
    shutil.rmtree(spool)
    sent += caller_packets(call, 20, first=20)
    assert_relaying(call)
    assert call.delete() == "0"
    # The spool copy was unlinked under us; its content is saved into -r at close.
    wait_for(lambda: len(log_lines(proxy, "content saved to")) == 2)
    assert [r.data for r in parse_adhoc(rec / name(call, "o.rtp"))] == sent + [
        rtp(900, 900 * 160, 0x1111, payload(900))
    ]


def test_full_file_system_stops_the_file_and_keeps_relaying(rtpproxy):
    with tmpfs("64k") as rec:
        proxy = rtpproxy("-l", "127.0.0.1", "-r", str(rec), "-R")
        call = kamailio_call(proxy)
        assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "0"
        sent = []
        for i in range(120):
            pkt = rtp(i, i * 160, 0x1111, payload(i, 1000))
            data, _ = call.a_to_b(pkt)
            assert data == pkt
            sent.append(pkt)
        assert_relaying(call)
        assert call.delete() == "0"
        wait_for(lambda: log_lines(proxy, "error while recording session"))
        errors = log_lines(proxy, "error while recording session")
        assert len(errors) == 1, errors
        assert "No space left on device" in errors[0]
        assert stat(proxy, "nrec_errors") == 1
        recs = parse_adhoc(rec / name(call, "o.rtp"))
        assert 0 < len(recs) < len(sent)
        assert [r.data for r in recs] == sent[: len(recs)]
        assert stat(proxy, "nsess_destroyed") == 1


# --- shutdown -----------------------------------------------------------------------


@pytest.mark.parametrize("pcap", [False, True])
def test_sigterm_flushes_and_closes_every_recording(rtpproxy, pcap):
    spool, rec = new_dir("tsp"), new_dir("trec")
    flags = ["-P"] if pcap else []
    proxy = rtpproxy("-l", "127.0.0.1", "-r", str(rec), "-S", str(spool), *flags)
    calls = [kamailio_call(proxy) for _ in range(3)]
    sent = {}
    for call in calls:
        assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "0"
        sent[call.call_id] = caller_packets(call, 7)  # well under the 4 KiB buffer
    assert proxy.stop(signal.SIGTERM) == 0
    parse = parse_pcap if pcap else parse_adhoc
    for call in calls:
        assert [r.data for r in parse(rec / name(call, "o.rtp"))] == sent[call.call_id]
    assert list(spool.iterdir()) == []


# --- extractaudio ---------------------------------------------------------------------


def tone(freq: float, n: int) -> bytes:
    samples = [round(8000 * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n)]
    return g711.ulaw_encode(struct.pack(f"<{n}h", *samples))


def decoded(ulaw: bytes) -> array:
    return array("h", g711.ulaw_decode(ulaw))


@pytest.mark.parametrize("pcap", [False, True])
def test_extractaudio_on_a_recording_made_through_the_daemon(rtpproxy, pcap):
    rec = new_dir("ea")
    flags = ["-P"] if pcap else []
    proxy = rtpproxy("-l", "127.0.0.1", "-r", str(rec), *flags)
    call = kamailio_call(proxy)
    assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "0"
    assert proxy.cmd(f"R {call.call_id} ttag;1 ftag;1") == "0"
    frames = 50
    tone_a, tone_b = tone(440, 160 * frames), tone(1000, 160 * frames)
    for i in range(frames):
        chunk = slice(160 * i, 160 * (i + 1))
        pkt = rtp(100 + i, 8000 + 160 * i, 0xA, tone_a[chunk])
        assert call.a_to_b(pkt)[0] == pkt
        pkt = rtp(700 + i, 3000 + 160 * i, 0xB, tone_b[chunk])
        assert call.b_to_a(pkt)[0] == pkt
        time.sleep(0.002)
    assert call.delete() == "0"
    parse = parse_pcap if pcap else parse_adhoc
    wait_for(lambda: len(packets_in(rec / name(call, "a.rtp"), parse) or ()) == frames)
    out = rec / "out.wav"
    done = subprocess.run(
        rtpproxy_command()
        + ["extractaudio", "-s", "-F", "wav", "-D", "pcm_16"]
        + [str(rec / f"{call.call_id}=ftag"), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        pcm = array("h", w.readframes(w.getnframes()))
    answerer, originator = pcm[0::2], pcm[1::2]
    for channel, sent in ((originator, tone_a), (answerer, tone_b)):
        want = decoded(sent)
        start = channel.tobytes().find(want.tobytes())
        assert start >= 0 and start % 2 == 0, "the decoded tone is not in the channel"
        start //= 2
        assert start < 8000 // 10  # starts within 100 ms of the first packet
        assert not any(channel[:start]) and not any(channel[start + len(want) :])


# --- no recording overwrites another ----------------------------------------------------


def test_two_media_streams_of_one_call_do_not_share_a_file(rtpproxy):
    rec = new_dir("m2")
    proxy = rtpproxy("-l", "127.0.0.1", "-r", str(rec), "-a")
    audio = kamailio_call(proxy)
    video = media_call(proxy, audio.call_id, 2)
    sent_audio = caller_packets(audio, 30)
    sent_video = caller_packets(video, 30, ssrc=0x3333)
    assert audio.delete() == "0"
    assert video.delete() == "0"
    wait_for(
        lambda: (
            sorted(packets_in(p) or [] for p in rec.glob("*.o.rtp"))
            == sorted([sent_audio, sent_video])
        )
    )
    bodies = sorted(
        ([r.data for r in parse_adhoc(p)] for p in rec.glob("*.o.rtp")), key=lambda b: b[0]
    )
    assert bodies == sorted([sent_audio, sent_video], key=lambda b: b[0])


def test_r_after_n_keeps_the_first_recording(rtpproxy):
    rec, proxy, call = recording_call(rtpproxy, "rn")
    assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "0"
    first = caller_packets(call, 5)
    assert proxy.cmd(f"N {call.call_id} ftag;1 ttag;1") == "0"
    caller_packets(call, 5, first=5)  # paused: not recorded anywhere
    assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "0"
    second = caller_packets(call, 5, first=10)
    assert call.delete() == "0"
    wait_recorded(rec / name(call, "2.o.rtp"), second)
    assert [r.data for r in parse_adhoc(rec / name(call, "o.rtp"))] == first
    assert [r.data for r in parse_adhoc(rec / name(call, "2.o.rtp"))] == second
    assert (rec / name(call, "2.o.rtcp")).exists()
    assert len(log_lines(proxy, "recording to")) == 1


def test_r_after_a_write_error_starts_recording_again(rtpproxy):
    with tmpfs("64k") as rec:
        filler = rec / "filler"
        filler.write_bytes(bytes(40 * 1024))
        proxy = rtpproxy("-l", "127.0.0.1", "-r", str(rec), "-R")
        call = kamailio_call(proxy)
        assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "0"
        sent = [rtp(i, i * 160, 1, payload(i, 1000)) for i in range(60)]
        for pkt in sent:
            assert call.a_to_b(pkt)[0] == pkt
        wait_for(lambda: log_lines(proxy, "error while recording session"))
        assert len(log_lines(proxy, "error while recording session")) == 1
        filler.unlink()
        assert proxy.cmd(f"R {call.call_id} ftag;1 ttag;1") == "0"
        again = caller_packets(call, 10, first=100)
        assert call.delete() == "0"
        wait_recorded(rec / name(call, "2.o.rtp"), again)
        kept = [r.data for r in parse_adhoc(rec / name(call, "o.rtp"))]
        assert 0 < len(kept) < len(sent) and kept == sent[: len(kept)]
        assert [r.data for r in parse_adhoc(rec / name(call, "2.o.rtp"))] == again


@pytest.mark.parametrize(("command", "suffix"), [("R", "o.rtp"), ("Rs", "pcap")])
def test_pcap_on_a_wildcard_listener_names_the_routed_local_address(rtpproxy, command, suffix):
    rec = new_dir("wild")
    proxy = rtpproxy("-r", str(rec), "-P", "-R")
    call = kamailio_call(proxy)
    assert proxy.cmd(f"{command} {call.call_id} ftag;1 ttag;1") == "0"
    sent = caller_packets(call, 3)
    assert call.delete() == "0"
    wait_recorded(rec / name(call, suffix), sent, parse_pcap)
    recs = parse_pcap(rec / name(call, suffix))
    assert [r.data for r in recs] == sent
    assert {r.dst for r in recs} == {("127.0.0.1", call.port_b)}


def test_sigterm_with_a_spool_on_another_file_system(rtpproxy):
    rec = new_dir("tx")
    with tmpfs("4m") as spool:
        proxy = rtpproxy("-l", "127.0.0.1", "-r", str(rec), "-S", str(spool), "-a", "-P")
        calls = [kamailio_call(proxy) for _ in range(5)]
        sent = {c.call_id: caller_packets(c, 40) for c in calls}
        assert proxy.stop(signal.SIGTERM) == 0
        assert list(spool.iterdir()) == []
    for call in calls:
        assert [r.data for r in parse_pcap(rec / name(call, "pcap"))] == sent[call.call_id]
