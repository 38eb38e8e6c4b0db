"""Session recording: file naming, ad-hoc and pcap record formats, buffered files.

Mirrors the classic ``rtpp_record.c``. A :class:`Recorder` owns one file. Packets
are appended to a 4096-byte buffer that is handed over when the next record
would not fit and at close. With a spool directory the file is moved into the
record directory at close.

The relay path never touches the disk: full buffers, the final flush, the close
and the move out of the spool are done, in order, by one OS thread
(:class:`FileWriter`). That thread never logs; what it has to say is run back on
the hub. When more than :data:`MAX_QUEUED_BYTES` wait for the disk, further
buffers are dropped and counted instead of queued.

Recording never raises into the relay path: any ``OSError`` logs one line,
bumps :attr:`RecordCounters.nrec_errors`, keeps what is already on disk as a
readable file (truncated back to a record boundary) and stops that file. A file
that holds nothing whole (not even its pcap header: a full disk at the start) is
removed rather than left empty or malformed.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import socket
import struct
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any, Protocol

import gevent
from gevent.monkey import get_original

log = logging.getLogger(__name__)

# The writer thread is a real OS thread: it uses the unpatched primitives only.
_start_thread = get_original("_thread", "start_new_thread")
_allocate_lock = get_original("_thread", "allocate_lock")
_SimpleQueue = get_original("queue", "SimpleQueue")

Addr = tuple[str, int]

BUFFER_SIZE = 4096
#: Bytes that may wait for the writer thread; buffers beyond it are dropped and counted.
MAX_QUEUED_BYTES = 64 << 20
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
    #: packets left out of recordings because the disk did not keep up
    nrec_pkts_dropped: int = 0


#: Default counters, used when a recorder is created without its own.
COUNTERS = RecordCounters()


# --- naming ---------------------------------------------------------------

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.@+,:~!")
#: A `C` target is one name the controller chose whole: `=` needs no escape there
#: (recording names use it between the call-id and the tag).
_COPY_SAFE = _SAFE | frozenset("=")
_HASHED_MARK = "%%"  # never produced by escaping: '%' is always followed by a hex digit or 'u'


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"%{code:02X}"
    # Never from the wire (command tokens are bytes decoded as latin-1); 'u' is no
    # hex digit, so this stays distinct from every byte escape.
    return f"%u{code:06X}"


def _escape(name: str, safe: frozenset[str] = _SAFE) -> str:
    out = [ch if ch in safe else _escape_char(ch) for ch in name]
    if out and out[0] == ".":
        out[0] = "%2E"
    return "".join(out)


def sanitize_component(
    name: str, max_len: int = COMPONENT_MAX, safe: frozenset[str] = _SAFE
) -> str:
    """Make ``name`` safe as one file-name component, keeping distinct names distinct.

    ``name`` holds the original bytes as latin-1 characters (as the command parser
    decodes them): each byte outside a small safe set (and ``%``, ``=``, a leading
    ``.``) becomes one ``%XX``; the empty string becomes ``%%``. Results longer
    than ``max_len`` keep a readable prefix and end in ``%%`` plus a SHA-256 digest
    of the name.
    """
    if max_len < 64:
        raise ValueError("max_len too small for a hashed name")
    if not name:
        return _HASHED_MARK
    escaped = _escape(name, safe)
    if len(escaped) <= max_len:
        return escaped
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    keep = max_len - len(_HASHED_MARK) - len(digest)
    prefix = escaped[:keep]
    cut = prefix.rfind("%", len(prefix) - 7)  # do not split an escape
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
        return sanitize_component(name, NAME_MAX, _COPY_SAFE)
    return f"{sanitize_component(name, NAME_MAX - len(suffix) - 1, _COPY_SAFE)}.{suffix}"


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


# --- the writer thread ------------------------------------------------------

Job = tuple[Callable[..., None], tuple, int]


class FileWriter:
    """One OS thread that does the recordings' file I/O, in the order it was queued.

    The hub only queues work (:meth:`submit`) and so never waits for the disk. The
    thread touches no gevent object and never logs: what it has to report is queued
    back with :meth:`report` and run on the hub, which an async watcher wakes.
    """

    def __init__(
        self,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        write: Callable[[int, memoryview], int] = os.write,
    ) -> None:
        self.max_queued_bytes = max_queued_bytes
        #: ``os.write`` as the thread calls it (a test can make the disk slow)
        self.write = write
        self._jobs = _SimpleQueue()
        self._reports: deque[tuple[Callable[..., None], tuple]] = deque()
        self._watcher: Any = None
        self._running = False
        self._queued_bytes = 0  # written by the hub only
        self._done_bytes = 0  # written by the thread only

    @property
    def backlog_bytes(self) -> int:
        """Bytes queued and not written yet."""
        return self._queued_bytes - self._done_bytes

    def submit(self, job: Callable[..., None], *args: Any, nbytes: int = 0) -> bool:
        """Queue ``job(*args)`` for the thread (hub side, never blocks).

        Returns False and queues nothing when ``nbytes`` more would take the
        backlog over :attr:`max_queued_bytes`; jobs of 0 bytes always go.
        """
        if nbytes and self.backlog_bytes + nbytes > self.max_queued_bytes:
            return False
        self._start()
        self._queued_bytes += nbytes
        self._jobs.put((job, args, nbytes))
        return True

    def report(self, callback: Callable[..., None], *args: Any) -> None:
        """Thread side: have ``callback(*args)`` run on the hub (logging, counting)."""
        self._reports.append((callback, args))
        watcher = self._watcher
        if watcher is not None:
            watcher.send()  # thread-safe

    def run_reports(self) -> None:
        """Hub side: run what the thread reported."""
        reports = self._reports
        while reports:
            callback, args = reports.popleft()
            try:
                callback(*args)
            except Exception:
                log.exception("recording report failed")

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is done, then run the reports.

        Blocks the calling OS thread, hub included: for shutdown and tests only.
        False when ``timeout`` (seconds) passed first.
        """
        done = True
        if self._running:
            lock = _allocate_lock()
            lock.acquire()
            self._jobs.put((lock.release, (), 0))
            done = lock.acquire(True, -1 if timeout is None else timeout)
        self.run_reports()
        return done

    def stop(self, timeout: float | None = None) -> bool:
        """Drain, then end the thread (a later :meth:`submit` starts a new one)."""
        done = self.drain(timeout)
        if self._running:
            self._running = False
            self._jobs.put(None)
            if done:
                self._watcher.close()
            self._watcher = None
        return done

    def _start(self) -> None:
        if self._running:
            return
        watcher = gevent.get_hub().loop.async_(ref=False)
        watcher.start(self.run_reports)
        self._watcher = watcher
        self._running = True
        self._jobs = _SimpleQueue()  # a thread left behind by a timed-out stop keeps its own
        _start_thread(self._loop, (self._jobs,))

    def _loop(self, jobs: Any) -> None:
        while True:
            item: Job | None = jobs.get()
            if item is None:
                return
            job, args, nbytes = item
            try:
                job(*args)
            except Exception:
                self.report(_log_job_crash, traceback.format_exc())
            self._done_bytes += nbytes


def _log_job_crash(text: str) -> None:
    log.error("recording writer: unexpected error: %s", text.rstrip())


#: The writer of recorders that are not given one.
WRITER = FileWriter()


# --- files ----------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


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

    The hub side (:meth:`write`, :meth:`close`) only fills the buffer and queues
    work for the :class:`FileWriter`; the methods ending in ``_job`` (and what they
    call) run on the writer thread, and the ``_on_`` methods run on the hub with
    what the thread reported.

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
        "_sink",
        "_fd",
        "_buf",
        "_bounds",
        "_size",
        "_buffer_size",
        "_users",
        "_closed",
        "_failed",
        "_unlinked",
        "_discarded",
        "_ndropped",
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
        writer: FileWriter | None = None,
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
        self._sink = writer if writer is not None else WRITER
        self._buf = bytearray()
        self._bounds: list[int] = []
        self._size = 0  # bytes on disk (writer thread)
        self._buffer_size = buffer_size
        self._users = 1
        self._closed = False
        self._failed = False  # set by the writer thread when the file stopped
        self._unlinked = False
        self._discarded = False  # removed: it held nothing whole
        self._ndropped = 0
        self._fd: int | None = None  # used by the writer thread once created
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            self.counters.nrec_errors += 1
            log.error("can't open file %s for writing: %s", self.path, exc.strerror)
            self._closed = True
            raise
        header = self._writer.file_header()
        if header:
            self._sink.submit(self._write_job, header, [len(header)])

    # -- live handoff: the file goes on in the next process

    def handoff_state(self) -> tuple[dict, int | None]:
        """What the next process needs to go on writing this file, and its descriptor.

        Call after :meth:`flush` and once the writer has drained (the size is final).
        """
        doc = {
            "name": self.name,
            "label": self.label,
            "path": self.path,
            "final_path": self.final_path,
            "pcap": isinstance(self._writer, PcapWriter),
            "size": self._size,
            "users": self._users,
            "closed": self._closed,
            "failed": self._failed,
            "unlinked": self._unlinked,
            "discarded": self._discarded,
            "ndropped": self._ndropped,
            "buffer_size": self._buffer_size,
        }
        return doc, self._fd

    @classmethod
    def adopt(
        cls, doc: dict, fd: int | None, counters: RecordCounters, writer: FileWriter
    ) -> Recorder:
        """The same file in the next process: appends continue at its end (`fd` shares
        the old process's file offset)."""
        rec = cls.__new__(cls)
        rec.name, rec.label = doc["name"], doc["label"]
        rec.path, rec.final_path = doc["path"], doc["final_path"]
        rec.counters = counters
        rec._writer = make_writer(RecordFormat.PCAP if doc["pcap"] else RecordFormat.ADHOC)
        rec._sink = writer
        rec._buf, rec._bounds = bytearray(), []
        rec._size = int(doc["size"])
        rec._buffer_size = int(doc["buffer_size"])
        rec._users = int(doc["users"])
        rec._closed = bool(doc["closed"])
        rec._failed = bool(doc["failed"])
        rec._unlinked = bool(doc["unlinked"])
        rec._discarded = bool(doc.get("discarded"))
        rec._ndropped = int(doc["ndropped"])
        rec._fd = fd
        return rec

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
        return not self._closed and not self._failed

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
        if self._closed or self._failed:
            return
        try:
            rec = self._writer.record(data, src, dst, arrival_wall_s)
        except (OSError, ValueError, OverflowError, struct.error) as exc:
            log.warning("recording %s: packet from %s not recorded: %s", self.path, src, exc)
            return
        if len(self._buf) + len(rec) > self._buffer_size:
            self._flush()
            if len(rec) > self._buffer_size:
                self._hand_over(rec, [len(rec)])
                return
        self._buf += rec
        self._bounds.append(len(self._buf))

    def flush(self) -> None:
        """Hand what is buffered to the writer thread."""
        if not self._closed:
            self._flush()

    def close(self) -> None:
        """Flush, close and move into the record directory (on the writer thread).

        Idempotent, never raises, never waits for the disk.
        """
        if self._closed:
            return
        self._closed = True
        self._users = 0
        if not self._failed:
            self._flush()
        self._buf, self._bounds = bytearray(), []
        if self._ndropped:
            log.warning(
                "recording %s: %d packets were left out, the disk did not keep up",
                self.final_path,
                self._ndropped,
            )
        self._sink.submit(self._close_job)

    # -- hub side

    def _flush(self) -> None:
        if self._buf:
            buf, bounds = self._buf, self._bounds
            self._buf, self._bounds = bytearray(), []
            self._hand_over(buf, bounds)

    def _hand_over(self, data: bytes | bytearray, bounds: list[int]) -> None:
        if self._sink.submit(self._write_job, data, bounds, nbytes=len(data)):
            return
        self.counters.nrec_pkts_dropped += len(bounds)
        if not self._ndropped:
            log.warning(
                "recording %s: the disk does not keep up (%d bytes waiting), "
                "packets are left out of the recording",
                self.path,
                self._sink.backlog_bytes,
            )
        self._ndropped += len(bounds)

    def _on_write_error(self, exc: OSError, discarded: bool = False) -> None:
        self.counters.nrec_errors += 1
        self._buf, self._bounds = bytearray(), []
        log.error(
            "error while recording session (%s) to %s: %s; recording of this file stopped%s",
            self.label,
            self.path,
            exc.strerror or exc,
            ", nothing was written: file removed" if discarded else "",
        )

    def _on_close_error(self, exc: OSError) -> None:
        self.counters.nrec_errors += 1
        log.error(
            "error while recording session (%s) to %s: %s", self.label, self.path, exc.strerror
        )

    def _on_rescue(self, path: str, exc: OSError | None) -> None:
        self.counters.nrec_errors += 1
        if exc is not None:
            log.error(
                "session record %s was removed while recording and can't be saved to %s: %s",
                path,
                self.final_path,
                exc.strerror,
            )
        else:
            log.error(
                "session record %s was removed while recording; content saved to %s",
                path,
                self.final_path,
            )

    def _on_spool_copy(self, path: str) -> None:
        self.counters.nrec_spool_copies += 1
        log.warning(
            "session record %s copied into %s: spool and record directories are on "
            "different file systems",
            path,
            self.final_path,
        )

    def _on_move_failed(self, path: str, exc: OSError) -> None:
        self.counters.nrec_errors += 1
        log.error(
            "can't move session record from spool into permanent storage: %s -> %s: %s",
            path,
            self.final_path,
            exc.strerror,
        )

    # -- writer thread

    def _write_job(self, data: bytes | bytearray, bounds: list[int]) -> None:
        """Write whole records; on error cut the file back to the last complete record."""
        fd = self._fd
        if fd is None:
            return
        write = self._sink.write
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += write(fd, view[written:])
        except OSError as exc:
            kept = max((b for b in bounds if b <= written), default=0)
            self._fail(exc, self._size + kept)
            return
        self._size += written

    def _close_job(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self._finish_fd(fd)
        if self.path != self.final_path and not self._unlinked and not self._discarded:
            self._move_to_final()

    def _fail(self, exc: OSError, good_size: int) -> None:
        """Stop the file after a write error: cut it back to its last whole record, or
        remove it when that leaves nothing (no complete header or record)."""
        self._failed = True
        fd, self._fd = self._fd, None
        if fd is None:
            self._sink.report(self._on_write_error, exc)
            return
        if good_size == 0 and self._remove(fd):
            self._discarded = True
            self._sink.report(self._on_write_error, exc, True)
            _close_fd(fd)
            return
        try:
            os.ftruncate(fd, good_size)
        except OSError:
            pass
        self._sink.report(self._on_write_error, exc)  # the file ends on a record now
        self._finish_fd(fd)

    def _remove(self, fd: int) -> bool:
        """Unlink our file's name (only if it still names this very file)."""
        try:
            st, mine = os.lstat(self.path), os.fstat(fd)
            if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
                return False
            os.unlink(self.path)
        except OSError:
            return False
        return True

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
            self._sink.report(self._on_close_error, exc)

    def _rescue_unlinked(self, fd: int) -> None:
        self._unlinked = True
        try:
            _copy_from_fd(fd, self.final_path)
        except OSError as exc:
            self._sink.report(self._on_rescue, self.path, exc)
            return
        self._sink.report(self._on_rescue, self.path, None)
        self.path = self.final_path

    def _move_to_final(self) -> None:
        try:
            os.rename(self.path, self.final_path)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                self._sink.report(self._on_move_failed, self.path, exc)
                return
        try:
            _copy_then_unlink(self.path, self.final_path)
        except OSError as exc:
            self._sink.report(self._on_move_failed, self.path, exc)
            return
        self._sink.report(self._on_spool_copy, self.path)
