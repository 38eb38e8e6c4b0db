"""RTP packets (RFC 3550 section 5.1) and the relay's receive buffer.

Two levels of detail:

* the relay path reads only the fixed header fields with ``HEADER`` (one
  precompiled ``struct.Struct``), here, in the analyzer, latching and the tools;
* ``RtpPacket`` is the full, validating model (CSRCs, header extension,
  padding) used by the player, the resizer and recording. ``serialize()`` is
  the exact inverse of ``parse()``.

The receive buffer (``ReceiveBuffer``) is laid out so that the deferred analysis
(analyzer.py) can take a plain packet's record from it without copying fields:
the time of the poll that found the packet, then the packet itself.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
RTP_HEADER_LENGTH = 12
RTP_CSRC_LENGTH = 4
RTP_EXT_HEADER_LENGTH = 4
RTP_MAX_CSRC = 15
RTP_SEQ_MOD = 1 << 16
RTP_TS_MOD = 1 << 32

#: V/P/X/CC byte, M/PT byte, sequence number, timestamp, SSRC.
HEADER = struct.Struct("!BBHII")
EXT_HEADER = struct.Struct("!HH")

_FLAG_PADDING = 0x20
_FLAG_EXTENSION = 0x10
_CC_MASK = 0x0F
MARKER = 0x80
PT_MASK = 0x7F
#: The first byte of a plain packet: V=2, no padding, no extension, no CSRC.
PLAIN_V2 = 0x80

#: RTP clock rate of the static payload types (RFC 3551); 0 = unknown.
TS_RATES: tuple[int, ...] = (
    (8000, 0, 0, 8000, 8000, 8000, 16000, 8000, 8000, 8000)
    + (44100, 44100, 8000, 8000, 90000, 8000, 11025, 22050, 8000)
    + (0,) * (128 - 19)
)


def ts_less(a: int, b: int) -> bool:
    """True if 32-bit RTP timestamp ``a`` is before ``b`` in serial arithmetic."""
    return (a - b) & 0xFFFFFFFF > 0x80000000


def payload_bounds(data: bytes) -> tuple[int, int]:
    """Return ``(start, end)`` of the payload, or raise ``ValueError``.

    Checks every length the header claims: the fixed header, the CSRC list,
    the extension header and its body, and the padding count.
    """
    size = len(data)
    if size < RTP_HEADER_LENGTH:
        raise ValueError(
            f"RTP packet too short: {size} bytes, the fixed header needs {RTP_HEADER_LENGTH}"
        )
    b0 = data[0]
    version = b0 >> 6
    if version != RTP_VERSION:
        raise ValueError(f"RTP version is {version}, expected {RTP_VERSION}")
    cc = b0 & _CC_MASK
    start = RTP_HEADER_LENGTH + cc * RTP_CSRC_LENGTH
    if size < start:
        raise ValueError(f"RTP packet too short for {cc} CSRC entries: {size} bytes, need {start}")
    if b0 & _FLAG_EXTENSION:
        if size < start + RTP_EXT_HEADER_LENGTH:
            raise ValueError(
                f"RTP packet too short for the extension header: {size} bytes, "
                f"need {start + RTP_EXT_HEADER_LENGTH}"
            )
        words = EXT_HEADER.unpack_from(data, start)[1]
        start += RTP_EXT_HEADER_LENGTH + 4 * words
        if size < start:
            raise ValueError(
                f"RTP packet too short for a {words}-word header extension: "
                f"{size} bytes, need {start}"
            )
    end = size
    if b0 & _FLAG_PADDING:
        if size == start:
            raise ValueError("RTP padding flag set but no byte follows the header")
        padding = data[-1]
        if padding == 0:
            raise ValueError("RTP padding count is zero")
        if padding > size - start:
            raise ValueError(
                f"RTP padding count {padding} exceeds the {size - start} bytes after the header"
            )
        end -= padding
    return start, end


@dataclass(slots=True)
class RtpPacket:
    """A complete RTP packet.

    ``extension`` is ``None`` when the X bit is clear, else the extension body
    (a multiple of 4 bytes; may be empty). ``padding`` holds the padding bytes
    verbatim, the last one being their count, so that ``serialize()`` gives
    back exactly the parsed bytes.
    """

    payload_type: int = 0
    marker: bool = False
    seq: int = 0
    ts: int = 0
    ssrc: int = 0
    csrc: tuple[int, ...] = ()
    extension_profile: int = 0
    extension: bytes | None = None
    payload: bytes = b""
    padding: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        start, end = payload_bounds(data)
        b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
        cc = b0 & _CC_MASK
        csrc = struct.unpack_from(f"!{cc}I", data, RTP_HEADER_LENGTH) if cc else ()
        profile = 0
        extension = None
        if b0 & _FLAG_EXTENSION:
            pos = RTP_HEADER_LENGTH + cc * RTP_CSRC_LENGTH
            profile = EXT_HEADER.unpack_from(data, pos)[0]
            extension = bytes(data[pos + RTP_EXT_HEADER_LENGTH : start])
        return cls(
            payload_type=b1 & PT_MASK,
            marker=bool(b1 & MARKER),
            seq=seq,
            ts=ts,
            ssrc=ssrc,
            csrc=tuple(csrc),
            extension_profile=profile,
            extension=extension,
            payload=bytes(data[start:end]),
            padding=bytes(data[end:]),
        )

    @property
    def header_length(self) -> int:
        n = RTP_HEADER_LENGTH + RTP_CSRC_LENGTH * len(self.csrc)
        if self.extension is not None:
            n += RTP_EXT_HEADER_LENGTH + len(self.extension)
        return n

    def __len__(self) -> int:
        return self.header_length + len(self.payload) + len(self.padding)

    def serialize(self) -> bytes:
        if len(self.csrc) > RTP_MAX_CSRC:
            raise ValueError(f"RTP packet has {len(self.csrc)} CSRCs, at most 15 fit")
        if self.padding and self.padding[-1] != len(self.padding):
            raise ValueError(
                f"RTP padding of {len(self.padding)} bytes ends with count {self.padding[-1]}"
            )
        b0 = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            b0 |= _FLAG_PADDING
        parts = [
            HEADER.pack(
                b0 | (_FLAG_EXTENSION if self.extension is not None else 0),
                (MARKER if self.marker else 0) | (self.payload_type & PT_MASK),
                self.seq & 0xFFFF,
                self.ts & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            )
        ]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            if len(self.extension) % 4:
                raise ValueError(
                    f"RTP header extension of {len(self.extension)} bytes is not a multiple of 4"
                )
            parts.append(EXT_HEADER.pack(self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        parts.append(self.padding)
        return b"".join(parts)

    __bytes__ = serialize


# The receive buffer.

#: The time of the poll that found a packet (monotonic seconds).
STAMP = struct.Struct("!d")
#: A packet deferred for analysis: its arrival time, then its fixed header. In the
#: receive buffer these are its first RECORD_BYTES bytes for a plain packet.
RECORD = struct.Struct("!dBBHII")
RECORD_BYTES = RECORD.size
#: Offset of the marker and payload type byte in a RECORD.
RECORD_B1 = STAMP.size + 1
#: Where a packet starts in the receive buffer: right after the poll's STAMP.
PACKET_OFFSET = STAMP.size
RECV_BUF_BYTES = 65536


class ReceiveBuffer:
    """The one buffer the relay reads packets into: ``stamp(now)``, then receive into
    ``packet``; for a plain packet (first byte PLAIN_V2, at least RTP_HEADER_LENGTH
    bytes) ``record`` is then its RECORD, ready to append to ``RtpAnalyzer.pending``."""

    __slots__ = ("mem", "packet", "record")

    def __init__(self, size: int = RECV_BUF_BYTES) -> None:
        self.mem = bytearray(PACKET_OFFSET + size)
        self.packet = memoryview(self.mem)[PACKET_OFFSET:]
        self.record = memoryview(self.mem)[:RECORD_BYTES]

    def stamp(self, now: float) -> None:
        STAMP.pack_into(self.mem, 0, now)
