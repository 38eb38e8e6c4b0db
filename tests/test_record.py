import errno
import logging
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gevent
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import internet_checksum
from rtpp.media.recording import record
from rtpp.media.recording.record import FileWriter, RecordCounters, Recorder, RecordFormat

SRC4 = ("192.0.2.10", 48486)
DST4 = ("198.51.100.20", 41024)
SRC6 = ("2001:db8::10", 5004)
DST6 = ("2001:db8:1::20", 41000)
T0 = 1_700_000_000.25


def rtp_packet(seq: int, size: int = 172) -> bytes:
    header = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x11223344)
    return header + bytes((seq + i) & 0xFF for i in range(size - 12))


def settle(writer: FileWriter = record.WRITER) -> None:
    """Wait until the writer thread has done everything queued so far."""
    assert writer.drain(timeout=10)


def record_file(
    tmp: Path,
    fmt: RecordFormat,
    packets: list[bytes],
    src: tuple[str, int] = SRC4,
    dst: tuple[str, int] = DST4,
    **kwargs: object,
) -> Path:
    rec = Recorder("call=tag.o.rtp", str(tmp), fmt=fmt, **kwargs)  # type: ignore[arg-type]
    for i, pkt in enumerate(packets):
        rec.write(pkt, src, dst, T0 + i * 0.02)
    rec.close()
    settle()
    return tmp / "call=tag.o.rtp"


# --- a small independent pcap reader ------------------------------------------------


@dataclass
class Frame:
    ts: float
    src_mac: bytes
    dst_mac: bytes
    ip_version: int
    src: tuple[str, int]
    dst: tuple[str, int]
    ip_id: int | None
    ttl: int
    payload: bytes


def read_pcap(blob: bytes) -> tuple[tuple[int, ...], list[Frame]]:
    """Parse and validate every layer; checksums must verify to 0xFFFF."""
    header = struct.unpack("<IHHiIII", blob[:24])
    frames, off = [], 24
    while off < len(blob):
        sec, usec, incl, orig = struct.unpack_from("<IIII", blob, off)
        assert incl == orig and off + 16 + incl <= len(blob)
        frames.append(parse_frame(blob[off + 16 : off + 16 + incl], sec + usec / 1e6))
        off += 16 + incl
    assert off == len(blob)
    return header, frames


def parse_frame(frame: bytes, ts: float) -> Frame:
    dst_mac, src_mac, ethertype = frame[:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
    ip = frame[14:]
    if ethertype == 0x0800:
        assert ip[0] == 0x45 and ip[9] == 17 and ip[6:8] == b"\0\0"
        assert struct.unpack("!H", ip[2:4])[0] == len(ip)
        assert internet_checksum(ip[:20]) == 0xFFFF, "IPv4 header checksum"
        family, saddr, daddr, udp = socket.AF_INET, ip[12:16], ip[16:20], ip[20:]
        pseudo = saddr + daddr + struct.pack("!BBH", 0, 17, len(udp))
        ip_id, ttl, version = struct.unpack("!H", ip[4:6])[0], ip[8], 4
    else:
        assert ethertype == 0x86DD
        vtf, plen, nxt, ttl = struct.unpack("!IHBB", ip[:8])
        assert vtf == 6 << 28 and nxt == 17 and plen == len(ip) - 40
        family, saddr, daddr, udp = socket.AF_INET6, ip[8:24], ip[24:40], ip[40:]
        pseudo = saddr + daddr + struct.pack("!IxxxB", len(udp), 17)
        ip_id, version = None, 6
    sport, dport, ulen, csum = struct.unpack("!HHHH", udp[:8])
    assert ulen == len(udp) and csum != 0
    assert internet_checksum(pseudo + udp) == 0xFFFF, "UDP checksum"
    src = (socket.inet_ntop(family, saddr), sport)
    dst = (socket.inet_ntop(family, daddr), dport)
    return Frame(ts, src_mac, dst_mac, version, src, dst, ip_id, ttl, udp[8:])


def tshark_check(path: Path, count: int) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    out = subprocess.run(
        ["tshark", "-r", str(path), "-o", "udp.check_checksum:TRUE", "-o",
         "ip.check_checksum:TRUE", "-T", "fields", "-e", "udp.checksum.status",
         "-e", "ip.checksum.status", "-e", "_ws.malformed"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    assert len(out) == count
    for line in out:
        udp_status, ip_status, *malformed = line.split("\t")
        assert udp_status == "1" and ip_status in ("1", "") and not any(malformed)


# --- formats ------------------------------------------------------------------------------


def test_adhoc_ten_pcmu_packets_make_2020_bytes(tmp_path: Path) -> None:
    packets = [rtp_packet(i) for i in range(10)]
    blob = record_file(tmp_path, RecordFormat.ADHOC, packets).read_bytes()
    assert len(blob) == 2020
    for i, pkt in enumerate(packets):
        rec = blob[i * 202 : (i + 1) * 202]
        family, port, addr, arrival, plen = struct.unpack("=HH16sdH", rec[:30])
        assert family == 2 and struct.unpack("!H", rec[2:4])[0] == SRC4[1]
        assert addr == socket.inet_aton(SRC4[0]) + bytes(12)
        assert arrival == T0 + i * 0.02 and plen == 172 and rec[30:] == pkt


def test_adhoc_ipv6_header(tmp_path: Path) -> None:
    blob = record_file(tmp_path, RecordFormat.ADHOC, [rtp_packet(1, 60)], SRC6, DST6).read_bytes()
    assert len(blob) == 90
    assert struct.unpack("=H", blob[:2])[0] == 10
    assert blob[2:4] == struct.pack("!H", SRC6[1])
    assert blob[4:20] == socket.inet_pton(socket.AF_INET6, SRC6[0])
    assert struct.unpack("=H", blob[28:30])[0] == 60


def test_pcap_ten_pcmu_packets_make_2324_valid_bytes(tmp_path: Path) -> None:
    packets = [rtp_packet(i) for i in range(10)]
    path = record_file(tmp_path, RecordFormat.PCAP, packets)
    blob = path.read_bytes()
    assert len(blob) == 24 + 10 * 230
    header, frames = read_pcap(blob)
    assert header == (0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    ids = [f.ip_id for f in frames]
    assert ids == [(ids[0] + i) & 0xFFFF for i in range(10)]
    for i, (frame, pkt) in enumerate(zip(frames, packets, strict=True)):
        assert frame.payload == pkt and frame.ttl == 127
        assert (frame.src, frame.dst) == (SRC4, DST4)
        assert frame.src_mac == b"\0\0" + socket.inet_aton(SRC4[0])
        assert frame.dst_mac == b"\0\0" + socket.inet_aton(DST4[0])
        assert abs(frame.ts - (T0 + i * 0.02)) < 1e-6
    tshark_check(path, 10)


def test_pcap_ipv6_record_and_folded_macs(tmp_path: Path) -> None:
    packets = [rtp_packet(i, 173) for i in range(3)]  # odd length exercises checksum padding
    path = record_file(tmp_path, RecordFormat.PCAP, packets, SRC6, DST6)
    blob = path.read_bytes()
    assert len(blob) == 24 + 3 * (78 + 173)
    _, frames = read_pcap(blob)
    raw = socket.inet_pton(socket.AF_INET6, SRC6[0])
    mac = bytearray(raw[:6])
    for i in range(6, 16):
        mac[i % 6] ^= raw[i]
    for frame, pkt in zip(frames, packets, strict=True):
        assert frame.ip_version == 6 and frame.ttl == 64 and frame.payload == pkt
        assert (frame.src, frame.dst) == (SRC6, DST6) and frame.src_mac == bytes(mac)
    tshark_check(path, 3)


def test_ip_id_counter_is_shared_by_all_pcap_files(tmp_path: Path) -> None:
    a = Recorder("a", str(tmp_path), fmt=RecordFormat.PCAP)
    b = Recorder("b", str(tmp_path), fmt=RecordFormat.PCAP)
    for i in range(4):
        (a if i % 2 else b).write(rtp_packet(i), SRC4, DST4, T0)
    a.close()
    b.close()
    settle()
    ids_a = [f.ip_id for f in read_pcap((tmp_path / "a").read_bytes())[1]]
    ids_b = [f.ip_id for f in read_pcap((tmp_path / "b").read_bytes())[1]]
    assert sorted(ids_a + ids_b) == [(ids_b[0] + i) & 0xFFFF for i in range(4)]


def test_empty_rtcp_files_at_start(tmp_path: Path) -> None:
    Recorder("x.rtcp", str(tmp_path)).close()
    Recorder("y.rtcp", str(tmp_path), fmt=RecordFormat.PCAP).close()
    settle()
    assert (tmp_path / "x.rtcp").stat().st_size == 0
    assert (tmp_path / "y.rtcp").stat().st_size == 24


def test_pcap_header_is_on_disk_before_close(tmp_path: Path) -> None:
    rec = Recorder("live", str(tmp_path), fmt=RecordFormat.PCAP)
    rec.write(rtp_packet(0), SRC4, DST4, T0)
    settle()  # the header goes through the writer thread, the packet is still buffered
    assert (tmp_path / "live").stat().st_size == 24
    rec.close()
    settle()


def test_buffer_is_written_when_full_and_at_close(tmp_path: Path) -> None:
    rec = Recorder("buf", str(tmp_path))
    path = tmp_path / "buf"
    for i in range(20):  # 20 * 202 = 4040 bytes still fit the 4096-byte buffer
        rec.write(rtp_packet(i), SRC4, DST4, T0)
    settle()
    assert path.stat().st_size == 0
    rec.write(rtp_packet(20), SRC4, DST4, T0)
    settle()
    assert path.stat().st_size == 4040
    big = bytes(5000)
    rec.write(big, SRC4, DST4, T0)  # bigger than the buffer: flushed, then written directly
    settle()
    assert path.stat().st_size == 4040 + 202 + 5030
    rec.close()
    settle()
    assert path.stat().st_size == 4040 + 202 + 5030
    rec.close()  # idempotent


def test_reopening_truncates(tmp_path: Path) -> None:
    record_file(tmp_path, RecordFormat.ADHOC, [rtp_packet(i) for i in range(5)])
    path = record_file(tmp_path, RecordFormat.ADHOC, [rtp_packet(1)])
    assert path.stat().st_size == 202


def test_shared_recorder_closes_on_last_release(tmp_path: Path) -> None:
    rec = Recorder("s.pcap", str(tmp_path), fmt=RecordFormat.PCAP)
    rec.retain()
    rec.write(rtp_packet(0), SRC4, DST4, T0)
    rec.release()
    assert not rec.closed
    rec.write(rtp_packet(1), ("198.51.100.20", 41009), ("203.0.113.5", 34293), T0)
    rec.release()
    assert rec.closed
    settle()
    _, frames = read_pcap((tmp_path / "s.pcap").read_bytes())
    assert [f.src for f in frames] == [SRC4, ("198.51.100.20", 41009)]


# --- spool ------------------------------------------------------------------------------


def test_spool_file_is_renamed_into_record_dir(tmp_path: Path) -> None:
    spool, rdir = tmp_path / "spool", tmp_path / "rec"
    spool.mkdir()
    rdir.mkdir()
    rec = Recorder("c=t.o.rtp", str(rdir), spool_dir=str(spool))
    rec.write(rtp_packet(0), SRC4, DST4, T0)
    assert (spool / "c=t.o.rtp").exists() and not (rdir / "c=t.o.rtp").exists()
    rec.close()
    settle()
    assert not (spool / "c=t.o.rtp").exists()
    assert (rdir / "c=t.o.rtp").stat().st_size == 202


def test_spool_on_other_file_system_falls_back_to_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spool, rdir = tmp_path / "spool", tmp_path / "rec"
    spool.mkdir()
    rdir.mkdir()
    counters = RecordCounters()

    def cross_device(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    rec = Recorder("x.rtp", str(rdir), spool_dir=str(spool), counters=counters)
    rec.write(rtp_packet(0), SRC4, DST4, T0)
    monkeypatch.setattr(os, "rename", cross_device)
    rec.close()
    settle()
    assert (rdir / "x.rtp").stat().st_size == 202 and not (spool / "x.rtp").exists()
    assert counters.nrec_spool_copies == 1 and counters.nrec_errors == 0
    assert "different file systems" in caplog.text


# --- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("abc123@host.example", "abc123@host.example"),
        ("../../x", "%2E.%2F..%2Fx"),
        ("a/b", "a%2Fb"),
        ("a\0b", "a%00b"),
        (".", "%2E"),
        ("..", "%2E."),
        (".hidden", "%2Ehidden"),
        ("50%", "50%25"),
        ("a=b", "a%3Db"),
        ("", "%%"),
        ("ü", "%FC"),
        ("\xc3\xa9", "%C3%A9"),  # UTF-8 'é' as the parser hands it over (latin-1)
        ("\u20ac", "%u0020AC"),  # never from the wire, still kept apart from bytes
    ],
)
def test_sanitize_component_examples(name: str, expected: str) -> None:
    assert record.sanitize_component(name) == expected


def test_record_names() -> None:
    assert record.record_name("cid@h", "ftag;1", "o.rtp") == "cid@h=ftag.o.rtp"
    assert record.record_name("cid@h", "ftag", "a.rtcp") == "cid@h=ftag.a.rtcp"
    assert record.record_name("cid@h", "ftag;2", "pcap") == "cid@h=ftag.pcap"
    assert record.stream_suffix(originator=True, rtcp=False) == "o.rtp"
    assert record.stream_suffix(originator=False, rtcp=True) == "a.rtcp"
    assert record.copy_name("mycopy", "rtp") == "mycopy.rtp"
    assert record.copy_name("../mycopy", None) == "%2E.%2Fmycopy"
    # A copy name may hold `=` as given (e.g. `CALLID=TAG.pcap`); a call-id may not.
    assert record.copy_name("cid=ftag.pcap", None) == "cid=ftag.pcap"
    assert record.copy_name("a=b", "rtp") == "a=b.rtp"
    assert record.sanitize_component("a=b") == "a%3Db"


def test_long_names_are_bounded_and_distinct() -> None:
    a, b = "x" * 1000 + "a", "x" * 1000 + "b"
    sa, sb = record.sanitize_component(a), record.sanitize_component(b)
    assert len(sa) <= 200 and len(sb) <= 200 and sa != sb
    long_name = record.record_name("\0" * 300, "/" * 300, "o.rtcp")
    assert len(long_name.encode()) <= 255 and "/" not in long_name


def _assert_inside(directory: str, component: str) -> None:
    assert component not in ("", ".", "..") and "/" not in component and "\0" not in component
    assert all(ord(c) >= 0x20 and ord(c) != 0x7F for c in component)
    assert len(component.encode()) <= 255
    path = os.path.realpath(os.path.join(directory, component))
    assert os.path.dirname(path) == os.path.realpath(directory)


@pytest.mark.parametrize("name", ["../../x", "a/b", "a\0b", "..", ".", "/etc/passwd", "x" * 5000])
def test_dangerous_names_stay_inside_the_directory(tmp_path: Path, name: str) -> None:
    component = record.sanitize_component(name)
    _assert_inside(str(tmp_path), component)
    (tmp_path / component).write_bytes(b"")  # creatable as a plain file


NAMES = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300
) | st.sampled_from(["", ".", "..", "../", "%", "%25", "=", "a=b", "x" * 400])
_NAME_DIR = tempfile.mkdtemp(prefix="rtpp-names-")


@settings(max_examples=300)
@given(NAMES, NAMES)
def test_sanitize_is_safe_and_injective(a: str, b: str) -> None:
    sa, sb = record.sanitize_component(a), record.sanitize_component(b)
    _assert_inside(_NAME_DIR, sa)
    assert (sa == sb) == (a == b)


@settings(max_examples=200)
@given(NAMES, NAMES, NAMES, NAMES)
def test_record_name_is_injective(c1: str, t1: str, c2: str, t2: str) -> None:
    n1, n2 = record.record_name(c1, t1, "o.rtp"), record.record_name(c2, t2, "o.rtp")
    _assert_inside(_NAME_DIR, n1)
    key1, key2 = (c1, t1.split(";")[0]), (c2, t2.split(";")[0])
    assert (n1 == n2) == (key1 == key2)


# --- failures ---------------------------------------------------------------------------


def _is_root() -> bool:
    return os.geteuid() == 0


@pytest.fixture
def tiny_fs() -> Iterator[Path]:
    """A 64 KiB tmpfs (root only)."""
    if not _is_root() or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    mnt = Path(tempfile.mkdtemp(prefix="rtpp-tinyfs-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)]).returncode:
        mnt.rmdir()
        pytest.skip("mount not permitted here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        mnt.rmdir()


def _adhoc_records(blob: bytes) -> list[bytes]:
    out, off = [], 0
    while off < len(blob):
        plen = struct.unpack_from("=H", blob, off + 28)[0]
        assert off + 30 + plen <= len(blob), "truncated record"
        out.append(blob[off + 30 : off + 30 + plen])
        off += 30 + plen
    return out


@pytest.mark.parametrize("fmt", list(RecordFormat))
def test_full_file_system_stops_the_file_cleanly(
    tiny_fs: Path, fmt: RecordFormat, caplog: pytest.LogCaptureFixture
) -> None:
    counters = RecordCounters()
    rec = Recorder("full", str(tiny_fs), fmt=fmt, counters=counters)
    packets = [rtp_packet(i & 0xFFFF, 1000) for i in range(200)]  # ~200 KB > 64 KiB
    with caplog.at_level(logging.ERROR, logger="rtpp.media.recording.record"):
        for i, pkt in enumerate(packets):
            rec.write(pkt, SRC4, DST4, T0 + i)
        rec.close()
        settle()
    assert counters.nrec_errors == 1 and not rec.active
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "error while recording session (RTP)" in errors[0].getMessage()
    assert errors[0].threadName == threading.current_thread().name  # logged by the hub
    assert os.strerror(errno.ENOSPC) in errors[0].getMessage()
    blob = (tiny_fs / "full").read_bytes()
    got = (
        _adhoc_records(blob)
        if fmt is RecordFormat.ADHOC
        else [f.payload for f in read_pcap(blob)[1]]
    )
    assert len(got) > 10 and got == packets[: len(got)]


def test_open_in_read_only_directory_returns_none(tmp_path: Path) -> None:
    counters = RecordCounters()
    if _is_root():
        ro = tmp_path / "nonexistent"  # root ignores permissions: use a missing directory
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
    assert Recorder.open("x.rtp", str(ro), counters=counters) is None
    assert counters.nrec_errors == 1


def test_read_only_record_dir_keeps_file_in_spool(tmp_path: Path) -> None:
    spool, rdir = tmp_path / "spool", tmp_path / "rec"
    spool.mkdir()
    rdir.mkdir()
    counters = RecordCounters()
    rec = Recorder("x.rtp", str(rdir), spool_dir=str(spool), counters=counters)
    rec.write(rtp_packet(0), SRC4, DST4, T0)
    if _is_root():
        rdir.rmdir()  # root ignores permissions: make the move fail by removing the target
    else:
        rdir.chmod(0o555)
    rec.close()
    settle()
    assert counters.nrec_errors == 1
    assert _adhoc_records((spool / "x.rtp").read_bytes()) == [rtp_packet(0)]


def test_vanished_spool_dir_content_is_rescued(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool, rdir = tmp_path / "spool", tmp_path / "rec"
    spool.mkdir()
    rdir.mkdir()
    counters = RecordCounters()
    rec = Recorder("x.rtp", str(rdir), spool_dir=str(spool), counters=counters)
    packets = [rtp_packet(i) for i in range(30)]
    for pkt in packets[:25]:
        rec.write(pkt, SRC4, DST4, T0)
    shutil.rmtree(spool)
    for pkt in packets[25:]:
        rec.write(pkt, SRC4, DST4, T0)
    rec.close()
    settle()
    assert counters.nrec_errors == 1
    assert _adhoc_records((rdir / "x.rtp").read_bytes()) == packets
    assert "removed while recording" in caplog.text


def test_vanished_record_dir_never_raises(tmp_path: Path) -> None:
    rdir = tmp_path / "rec"
    rdir.mkdir()
    counters = RecordCounters()
    rec = Recorder("x.rtp", str(rdir), counters=counters)
    rec.write(rtp_packet(0), SRC4, DST4, T0)
    shutil.rmtree(rdir)
    for i in range(40):
        rec.write(rtp_packet(i), SRC4, DST4, T0)
    rec.close()
    settle()
    assert counters.nrec_errors == 1


def test_bad_address_does_not_raise(tmp_path: Path) -> None:
    rec = Recorder("x.rtp", str(tmp_path), fmt=RecordFormat.PCAP)
    rec.write(rtp_packet(0), ("not-an-ip", 1), DST4, T0)
    rec.write(rtp_packet(1), SRC4, DST4, T0)
    rec.close()
    settle()
    assert len(read_pcap((tmp_path / "x.rtp").read_bytes())[1]) == 1


def test_record_name_escapes_each_original_byte_once() -> None:
    call_id = b"caf\xc3\xa9/x".decode("latin-1")  # as parse_command decodes a token
    assert record.record_name(call_id, "t\xff", "o.rtp") == "caf%C3%A9%2Fx=t%FF.o.rtp"


# --- the writer thread ------------------------------------------------------------------


class StuckDisk:
    """An ``os.write`` for the writer thread that waits until the test lets it go."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls = 0

    def write(self, fd: int, data: memoryview) -> int:
        self.calls += 1
        assert self.gate.wait(30), "the test never released the disk"
        return os.write(fd, data)


@pytest.fixture
def stuck() -> Iterator[tuple[StuckDisk, FileWriter]]:
    disk = StuckDisk()
    writer = FileWriter(write=disk.write)
    yield disk, writer
    disk.gate.set()
    writer.stop(timeout=10)


@pytest.mark.parametrize("fmt", list(RecordFormat))
def test_write_and_close_never_wait_for_a_stuck_disk(
    tmp_path: Path, stuck: tuple[StuckDisk, FileWriter], fmt: RecordFormat
) -> None:
    disk, writer = stuck
    packets = [rtp_packet(i & 0xFFFF, 100 + i % 300) for i in range(500)]  # ~150 KB
    rec = Recorder("slow", str(tmp_path), fmt=fmt, writer=writer)
    slowest = 0.0
    for i, pkt in enumerate(packets):
        started = time.monotonic()
        rec.write(pkt, SRC4, DST4, T0 + i * 0.02)
        slowest = max(slowest, time.monotonic() - started)
    started = time.monotonic()
    rec.close()
    slowest = max(slowest, time.monotonic() - started)
    assert slowest < 0.1
    deadline = time.monotonic() + 5
    while disk.calls == 0:  # the writer thread is stuck in its first write
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert (tmp_path / "slow").stat().st_size == 0  # everything still queued
    disk.gate.set()
    assert writer.drain(timeout=10)
    blob = (tmp_path / "slow").read_bytes()
    if fmt is RecordFormat.ADHOC:
        adhoc = record.AdhocWriter()
        assert blob == b"".join(
            adhoc.record(p, SRC4, DST4, T0 + i * 0.02) for i, p in enumerate(packets)
        )
    else:
        assert len(blob) == 24 + sum(58 + len(p) for p in packets)
        _, frames = read_pcap(blob)
        assert [f.payload for f in frames] == packets
        assert all(abs(f.ts - (T0 + i * 0.02)) < 1e-6 for i, f in enumerate(frames))


def test_spool_move_waits_for_the_writer_too(
    tmp_path: Path, stuck: tuple[StuckDisk, FileWriter]
) -> None:
    disk, writer = stuck
    spool, rdir = tmp_path / "spool", tmp_path / "rec"
    spool.mkdir()
    rdir.mkdir()
    rec = Recorder("x.rtp", str(rdir), spool_dir=str(spool), writer=writer)
    packets = [rtp_packet(i) for i in range(30)]
    for pkt in packets:
        rec.write(pkt, SRC4, DST4, T0)
    rec.close()
    assert (spool / "x.rtp").exists() and not (rdir / "x.rtp").exists()
    disk.gate.set()
    assert writer.drain(timeout=10)
    assert not (spool / "x.rtp").exists()
    assert _adhoc_records((rdir / "x.rtp").read_bytes()) == packets


def test_backlog_over_the_cap_is_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = StuckDisk()
    writer = FileWriter(max_queued_bytes=20_000, write=disk.write)
    counters = RecordCounters()
    rec = Recorder("capped", str(tmp_path), writer=writer, counters=counters)
    packets = [rtp_packet(i) for i in range(400)]  # 202-byte records, ~80 KB
    try:
        for pkt in packets:
            rec.write(pkt, SRC4, DST4, T0)
        assert writer.backlog_bytes <= 20_000
        rec.close()
        disk.gate.set()
        assert writer.drain(timeout=10)
    finally:
        disk.gate.set()
        writer.stop(timeout=10)
    kept = _adhoc_records((tmp_path / "capped").read_bytes())
    assert 0 < len(kept) < len(packets)
    assert counters.nrec_pkts_dropped == len(packets) - len(kept)
    assert kept == packets[: len(kept)]  # the dropped buffers are the later ones
    assert counters.nrec_errors == 0
    assert "disk does not keep up" in caplog.text and "were left out" in caplog.text


class FailingDisk:
    """Writes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, room: int) -> None:
        self.room = room

    def write(self, fd: int, data: memoryview) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(fd, data[: self.room])
        self.room -= n
        return n


def test_write_errors_are_reported_on_the_hub(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = FileWriter(write=FailingDisk(5000).write)
    counters = RecordCounters()
    rec = Recorder("err", str(tmp_path), writer=writer, counters=counters)
    packets = [rtp_packet(i) for i in range(60)]
    try:
        with caplog.at_level(logging.ERROR, logger="rtpp.media.recording.record"):
            for pkt in packets:
                rec.write(pkt, SRC4, DST4, T0)
            deadline = time.monotonic() + 5
            while counters.nrec_errors == 0:  # the hub's async watcher runs the report
                assert time.monotonic() < deadline, "error never reported"
                gevent.sleep(0.01)
            assert not rec.active
            rec.close()
            assert writer.drain(timeout=10)
    finally:
        writer.stop(timeout=10)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and os.strerror(errno.ENOSPC) in errors[0].getMessage()
    assert errors[0].threadName == threading.current_thread().name
    assert counters.nrec_errors == 1
    kept = _adhoc_records((tmp_path / "err").read_bytes())
    assert kept == packets[: len(kept)] and 0 < len(kept) < len(packets)


def test_stop_drains_and_a_later_submit_starts_again(tmp_path: Path) -> None:
    writer = FileWriter()
    rec = Recorder("a", str(tmp_path), writer=writer)
    rec.write(rtp_packet(0), SRC4, DST4, T0)
    rec.close()
    assert writer.stop(timeout=10)
    assert (tmp_path / "a").stat().st_size == 202
    rec = Recorder("b", str(tmp_path), writer=writer)
    rec.write(rtp_packet(1), SRC4, DST4, T0)
    rec.close()
    assert writer.stop(timeout=10)
    assert (tmp_path / "b").stat().st_size == 202
