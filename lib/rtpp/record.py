"""Session recording: file naming, ad-hoc and pcap record formats, buffered files.

Mirrors the classic ``rtpp_record.c``. A :class:`Recorder` owns one file. Packets
are appended to a 4096-byte buffer that is written out when the next record
would not fit and at close. With a spool directory the file is moved into the
record directory at close.

Recording never raises into the relay path: any ``OSError`` logs one line,
bumps :attr:`RecordCounters.nrec_errors`, keeps what is already on disk as a
readable file (truncated back to a record boundary) and stops that file.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any, Protocol

import gevent

log = logging.getLogger(__name__)

Addr = tuple[str, int]

BUFFER_SIZE = 4096
NAME_MAX = 255
COMPONENT_MAX = 200

AF_INET_WIRE = 2
AF_INET6_WIRE = 10

PCAP_MAGIC = 0xA1B2C3D4
PCAP_SNAPLEN = 65535
LINKTYPE_ETHERNET = 1
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
IP_TTL = 127
IPV6_HOP_LIMIT = 64
IPPROTO_UDP = 17

ADHOC_HEADER = struct.Struct("=dH")  # arrival time and length follow the address part
ADHOC_HEADER_SIZE = 30
PCAP_FILE_HEADER = struct.Struct("=IHHiIII")
PCAP_RECORD_HEADER = struct.Struct("=IIII")
IPV4_LENGTHS = struct.Struct("!HH")  # total length, identification
UDP_HEADER = struct.Struct("!HHHH")
IPV6_FIXED = struct.Struct("!IHBB")  # version/class/flow, payload length, next header, hops


@dataclass(slots=True)
class RecordCounters:
    """Recording health, for the caller to export (e.g. as a stats line or a log)."""

    #: files that hit an I/O error (open, write, move into the record directory)
    nrec_errors: int = 0
    #: spool files moved by copy because rename() crossed file systems
    nrec_spool_copies: int = 0


#: Default counters, used when a recorder is created without its own.
COUNTERS = RecordCounters()


# --- naming ---------------------------------------------------------------

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.@+,:~!")
_HASHED_MARK = "%%"  # never produced by escaping: '%' is always followed by two hex digits


def _escape(raw: bytes) -> str:
    out = [chr(b) if b in _SAFE else f"%{b:02X}" for b in raw]
    if out and out[0] == ".":
        out[0] = "%2E"
    return "".join(out)


def sanitize_component(name: str, max_len: int = COMPONENT_MAX) -> str:
    """Make ``name`` safe as one file-name component, keeping distinct names distinct.

    Bytes outside a small safe set (and ``%``, ``=``, a leading ``.``) become
    ``%XX``; the empty string becomes ``%%``. Results longer than ``max_len``
    keep a readable prefix and end in ``%%`` plus a SHA-256 digest of the name.
    """
    if max_len < 64:
        raise ValueError("max_len too small for a hashed name")
    raw = name.encode("utf-8", "surrogateescape")
    if not raw:
        return _HASHED_MARK
    escaped = _escape(raw)
    if len(escaped) <= max_len:
        return escaped
    digest = hashlib.sha256(raw).hexdigest()[:32]
    keep = max_len - len(_HASHED_MARK) - len(digest)
    prefix = escaped[:keep]
    cut = prefix.rfind("%", len(prefix) - 2)  # do not split a %XX escape
    if cut >= 0:
        prefix = prefix[:cut]
    return f"{prefix}{_HASHED_MARK}{digest}"


def strip_medianum(tag: str) -> str:
    """``ftag;1`` -> ``ftag``: every media stream of a call shares one file name."""
    return tag.split(";", 1)[0]


def record_name(call_id: str, from_tag: str, suffix: str) -> str:
    """``CALLID=FTAG.<suffix>``, e.g. suffix ``o.rtp``, ``a.rtcp`` or ``pcap`` (3.2)."""
    tag = strip_medianum(from_tag)
    room = NAME_MAX - len(suffix) - 2
    cid_s, tag_s = sanitize_component(call_id), sanitize_component(tag)
    if len(cid_s) + len(tag_s) > room:
        half = room // 2
        cid_s = sanitize_component(call_id, half)
        tag_s = sanitize_component(tag, room - half)
    return f"{cid_s}={tag_s}.{suffix}"


def stream_suffix(originator: bool, rtcp: bool) -> str:
    """Per-stream suffix: ``o`` is the originator's (from-tag party's) media."""
    return f"{'o' if originator else 'a'}.{'rtcp' if rtcp else 'rtp'}"


def copy_name(name: str, suffix: str | None) -> str:
    """Local copy ``C callid NAME``: ``NAME.rtp``/``NAME.rtcp``, or ``NAME`` in single-file mode."""
    if suffix is None:
        return sanitize_component(name, NAME_MAX)
    return f"{sanitize_component(name, NAME_MAX - len(suffix) - 1)}.{suffix}"


# --- record formats -------------------------------------------------------


class RecordFormat(Enum):
    ADHOC = "adhoc"
    PCAP = "pcap"


class RecordWriter(Protocol):
    def file_header(self) -> bytes: ...

    def record(self, data: bytes, src: Addr, dst: Addr, arrival_wall_s: float) -> bytes: ...


@lru_cache(maxsize=4096)
def _packed_ip(host: str) -> tuple[int, bytes]:
    """(wire family, packed address); IPv6 scope ids are dropped."""
    if ":" in host:
        return AF_INET6_WIRE, socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    return AF_INET_WIRE, socket.inet_pton(socket.AF_INET, host)


@lru_cache(maxsize=4096)
def _adhoc_address(src: Addr) -> bytes:
    family, packed = _packed_ip(src[0])
    return struct.pack("=H", family) + struct.pack("!H", src[1]) + packed.ljust(16, b"\0")


class AdhocWriter:
    """Classic default format (3.5): no file header; 30-byte header per packet."""

    def file_header(self) -> bytes:
        return b""

    def record(self, data: bytes, src: Addr, dst: Addr, arrival_wall_s: float) -> bytes:
        return b"".join((_adhoc_address(src), ADHOC_HEADER.pack(arrival_wall_s, len(data)), data))


class _IpIdCounter:
    """One process-wide IPv4 identification sequence shared by every pcap file."""

    def __init__(self) -> None:
        self.value = 0

    def next(self) -> int:
        value = self.value
        self.value = (value + 1) & 0xFFFF
        return value


IP_ID = _IpIdCounter()


def _fold_checksum(total: int) -> int:
    """Internet checksum of data whose big-endian integer value is ``total``.

    Summing 16-bit words with end-around carry is the same as taking the value
    modulo 0xFFFF, so one C-level ``int.from_bytes`` replaces the word loop.
    """
    rest = total % 0xFFFF
    if rest:
        return 0xFFFF - rest
    return 0xFFFF if total == 0 else 0


def _be_int(data: bytes | memoryview) -> int:
    """Big-endian value of ``data`` zero-padded to whole 16-bit words (no copy)."""
    value = int.from_bytes(data, "big")
    return value << 8 if len(data) & 1 else value


def _ipv6_mac(packed: bytes) -> bytes:
    mac = bytearray(packed[:6])
    for i in range(6, 16):
        mac[i % 6] ^= packed[i]
    return bytes(mac)


def _as_ipv6(packed: bytes) -> bytes:
    return packed if len(packed) == 16 else b"\0" * 10 + b"\xff\xff" + packed


@dataclass(frozen=True, slots=True)
class _Flow:
    """The per (src, dst) constant parts of a synthetic pcap frame."""

    ipv6: bool
    ether: bytes
    src_ip: bytes
    dst_ip: bytes
    ports: bytes
    pseudo_sum: int  # addresses + protocol + ports, big-endian integer words summed


@lru_cache(maxsize=4096)
def _flow(src: Addr, dst: Addr) -> _Flow:
    sfam, sip = _packed_ip(src[0])
    dfam, dip = _packed_ip(dst[0])
    ports = struct.pack("!HH", src[1], dst[1])
    ipv6 = sfam == AF_INET6_WIRE or dfam == AF_INET6_WIRE
    if ipv6:
        sip, dip = _as_ipv6(sip), _as_ipv6(dip)
        ether = _ipv6_mac(dip) + _ipv6_mac(sip) + struct.pack("!H", ETHERTYPE_IPV6)
    else:
        ether = b"\0\0" + dip + b"\0\0" + sip + struct.pack("!H", ETHERTYPE_IPV4)
    words = sip + dip + ports
    pseudo_sum = sum(_be_int(words[i : i + 2]) for i in range(0, len(words), 2)) + IPPROTO_UDP
    return _Flow(ipv6, ether, sip, dip, ports, pseudo_sum)


def _udp_header(flow: _Flow, payload: bytes) -> bytes:
    udp_len = 8 + len(payload)
    # Pseudo-header length plus the UDP length field: udp_len is counted twice.
    total = flow.pseudo_sum + 2 * udp_len + _be_int(payload)
    return flow.ports + struct.pack("!HH", udp_len, _fold_checksum(total) or 0xFFFF)


def _ipv4_header(flow: _Flow, udp_len: int) -> bytes:
    head = b"\x45\x00" + IPV4_LENGTHS.pack(20 + udp_len, IP_ID.next()) + b"\0\0"
    tail = flow.src_ip + flow.dst_ip
    ttl_proto = bytes((IP_TTL, IPPROTO_UDP))
    checksum = _fold_checksum(_be_int(head + ttl_proto + tail))
    return head + ttl_proto + struct.pack("!H", checksum) + tail


def _ipv6_header(flow: _Flow, udp_len: int) -> bytes:
    fixed = IPV6_FIXED.pack(6 << 28, udp_len, IPPROTO_UDP, IPV6_HOP_LIMIT)
    return fixed + flow.src_ip + flow.dst_ip


class PcapWriter:
    """``-P`` format (3.6): classic microsecond pcap, synthetic Ethernet/IP/UDP."""

    def file_header(self) -> bytes:
        return PCAP_FILE_HEADER.pack(PCAP_MAGIC, 2, 4, 0, 0, PCAP_SNAPLEN, LINKTYPE_ETHERNET)

    def record(self, data: bytes, src: Addr, dst: Addr, arrival_wall_s: float) -> bytes:
        flow = _flow(src, dst)
        udp = _udp_header(flow, data)
        udp_len = 8 + len(data)
        ip = _ipv6_header(flow, udp_len) if flow.ipv6 else _ipv4_header(flow, udp_len)
        frame_len = 14 + len(ip) + udp_len
        sec, usec = divmod(round(arrival_wall_s * 1_000_000), 1_000_000)
        rec_header = PCAP_RECORD_HEADER.pack(sec, usec, frame_len, frame_len)
        return b"".join((rec_header, flow.ether, ip, udp, data))


def make_writer(fmt: RecordFormat) -> RecordWriter:
    return PcapWriter() if fmt is RecordFormat.PCAP else AdhocWriter()


# --- files ----------------------------------------------------------------


def _run_blocking(fn: Callable[..., None], *args: object) -> None:
    """Run a long file operation in gevent's thread pool unless we are the hub itself.

    An ``OSError`` is carried back and raised here (the pool would print it).
    """

    def call() -> OSError | None:
        try:
            fn(*args)
        except OSError as exc:
            return exc
        return None

    hub = gevent.get_hub()
    exc = call() if gevent.getcurrent() is hub else hub.threadpool.apply(call)
    if exc is not None:
        raise exc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy_then_unlink(src: str, dst: str) -> None:
    tmp = f"{dst}.part"
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.unlink(src)


def _copy_from_fd(fd: int, dst: str) -> None:
    out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        offset = 0
        while chunk := os.pread(fd, 1 << 20, offset):
            _write_all(out, chunk)
            offset += len(chunk)
    finally:
        os.close(out)


class Recorder:
    """One recording file: buffered appends, error containment, spool finalization.

    Shared recorders (single-file pcap mode: both directions and their RTCP)
    are reference counted: each user calls :meth:`retain` once and
    :meth:`release` when done; the last release closes the file.
    """

    __slots__ = (
        "name",
        "label",
        "path",
        "final_path",
        "counters",
        "_writer",
        "_fd",
        "_buf",
        "_bounds",
        "_size",
        "_buffer_size",
        "_users",
        "_closed",
        "_unlinked",
    )

    def __init__(
        self,
        name: str,
        record_dir: str,
        *,
        spool_dir: str | None = None,
        fmt: RecordFormat = RecordFormat.ADHOC,
        label: str = "RTP",
        counters: RecordCounters | None = None,
        buffer_size: int = BUFFER_SIZE,
    ) -> None:
        """Create (truncate) ``name`` in the spool or record directory.

        Raises ``OSError`` if the file cannot be created (logged and counted
        already); :meth:`open` is the non-raising form.
        """
        self.name = name
        self.label = label
        self.counters = counters if counters is not None else COUNTERS
        self.final_path = os.path.join(record_dir, name)
        self.path = os.path.join(spool_dir, name) if spool_dir else self.final_path
        self._writer = make_writer(fmt)
        self._buf = bytearray()
        self._bounds: list[int] = []
        self._size = 0
        self._buffer_size = buffer_size
        self._users = 1
        self._closed = False
        self._unlinked = False
        self._fd: int | None = None
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            self.counters.nrec_errors += 1
            log.error("can't open file %s for writing: %s", self.path, exc.strerror)
            self._closed = True
            raise
        header = self._writer.file_header()
        if header:
            self._write_out(header, [len(header)])

    @classmethod
    def open(cls, name: str, record_dir: str, **kwargs: Any) -> Recorder | None:
        """Like the constructor, but returns ``None`` when the file cannot be created."""
        try:
            return cls(name, record_dir, **kwargs)
        except OSError:
            return None

    @property
    def active(self) -> bool:
        """True while packets are still being written to the file."""
        return self._fd is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def retain(self) -> Recorder:
        self._users += 1
        return self

    def release(self) -> None:
        self._users -= 1
        if self._users <= 0:
            self.close()

    def write(self, data: bytes, src: Addr, dst: Addr, arrival_wall_s: float) -> None:
        """Append one packet. ``src``/``dst`` are (host, port); wall time in seconds."""
        if self._fd is None:
            return
        try:
            rec = self._writer.record(data, src, dst, arrival_wall_s)
        except (OSError, ValueError, OverflowError, struct.error) as exc:
            log.warning("recording %s: packet from %s not recorded: %s", self.path, src, exc)
            return
        if len(self._buf) + len(rec) > self._buffer_size:
            if not self._flush():
                return
            if len(rec) > self._buffer_size:
                self._write_out(rec, [len(rec)])
                return
        self._buf += rec
        self._bounds.append(len(self._buf))

    def flush(self) -> None:
        if self._fd is not None:
            self._flush()

    def close(self) -> None:
        """Flush, close and move into the record directory. Idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        self._users = 0
        if self._fd is not None:
            self._flush()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self._finish_fd(fd)
        if self.path != self.final_path and not self._unlinked:
            self._move_to_final()

    # -- internals

    def _flush(self) -> bool:
        if not self._buf:
            return True
        buf, bounds = self._buf, self._bounds
        self._buf, self._bounds = bytearray(), []
        return self._write_out(buf, bounds)

    def _write_out(self, data: bytes | bytearray, bounds: list[int]) -> bool:
        """Write whole records; on error cut the file back to the last complete record."""
        assert self._fd is not None
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, view[written:])
        except OSError as exc:
            kept = max((b for b in bounds if b <= written), default=0)
            self._fail(exc, self._size + kept)
            return False
        self._size += written
        return True

    def _fail(self, exc: OSError, good_size: int) -> None:
        self.counters.nrec_errors += 1
        log.error(
            "error while recording session (%s) to %s: %s; recording of this file stopped",
            self.label,
            self.path,
            exc.strerror or exc,
        )
        fd, self._fd = self._fd, None
        self._buf, self._bounds = bytearray(), []
        if fd is None:
            return
        try:
            os.ftruncate(fd, good_size)
        except OSError:
            pass
        self._finish_fd(fd)

    def _finish_fd(self, fd: int) -> None:
        """Close the file, first rescuing its content if its name was unlinked meanwhile."""
        try:
            if os.fstat(fd).st_nlink == 0:
                self._rescue_unlinked(fd)
        except OSError:
            pass
        try:
            os.close(fd)
        except OSError as exc:
            self.counters.nrec_errors += 1
            log.error(
                "error while recording session (%s) to %s: %s", self.label, self.path, exc.strerror
            )

    def _rescue_unlinked(self, fd: int) -> None:
        self._unlinked = True
        self.counters.nrec_errors += 1
        try:
            _run_blocking(_copy_from_fd, fd, self.final_path)
        except OSError as exc:
            log.error(
                "session record %s was removed while recording and can't be saved to %s: %s",
                self.path,
                self.final_path,
                exc.strerror,
            )
            return
        log.error(
            "session record %s was removed while recording; content saved to %s",
            self.path,
            self.final_path,
        )
        self.path = self.final_path

    def _move_to_final(self) -> None:
        try:
            os.rename(self.path, self.final_path)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                self._move_failed(exc)
                return
        try:
            _run_blocking(_copy_then_unlink, self.path, self.final_path)
        except OSError as exc:
            self._move_failed(exc)
            return
        self.counters.nrec_spool_copies += 1
        log.warning(
            "session record %s copied into %s: spool and record directories are on "
            "different file systems",
            self.path,
            self.final_path,
        )

    def _move_failed(self, exc: OSError) -> None:
        self.counters.nrec_errors += 1
        log.error(
            "can't move session record from spool into permanent storage: %s -> %s: %s",
            self.path,
            self.final_path,
            exc.strerror,
        )
