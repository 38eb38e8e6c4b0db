"""extractaudio: turn a call recording (ad-hoc or pcap) into an audio file.

Channel A is the answerer's media (``<rdir>.a.rtp`` or ``-A``), channel B the
originator's (``<rdir>.o.rtp`` or ``-B``). A single-file pcap given alone holds
both directions; they are told apart by the address each party sent to (the
proxy's port) and become channels A and B. Within a channel packets are grouped
by SSRC; each stream is placed on an 8 kHz timeline by arrival time and RTP
timestamp, with silence in the gaps unless ``-n``. PCMU and PCMA are decoded.
"""

from __future__ import annotations

import getopt
import math
import os
import struct
import sys
import wave
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from rtpp.media.rtp import HEADER, PT_MASK, RTP_HEADER_LENGTH, RTP_VERSION
from rtpp.tools import g711

USAGE = """\
usage: extractaudio [-idsne] [-F file_fmt] [-D data_fmt] rdir outfile [link1 ... linkN]
       extractaudio [-idsne] [-F file_fmt] [-D data_fmt] [-A answer_cap] [-B originate_cap]
                    outfile [link1 ... linkN]
       extractaudio -S [-A answer_cap] [-B originate_cap]
       extractaudio -S rdir
"""

RATE = 8000
EXIT_OK, EXIT_USAGE, EXIT_OUTPUT = 0, 1, 2

FILE_FORMATS = ("wav", "raw")
DATA_FORMATS = ("pcm_16", "ulaw", "alaw")
CLASSIC_FILE_FORMATS = (
    "wav aiff au raw paf svx nist voc ircam w64 mat4 mat5 pvf xi htk sds avr wavex sd2 flac "
    "caf wve ogg mpc2k rf64"
).split()
CLASSIC_DATA_FORMATS = (
    "pcm_s8 pcm_16 pcm_24 pcm_32 pcm_u8 float double ulaw alaw ima_adpcm ms_adpcm gsm610 "
    "vox_adpcm g721_32 g723_24 g723_40 dwvw_12 dwvw_16 dwvw_24 dwvw_n dpcm_8 dpcm_16 vorbis opus"
).split()

PT_PCMU, PT_PCMA = 0, 8
IGNORED_PTS = frozenset((13, 100, 101))  # comfort noise, telephone events
DECODERS = {PT_PCMU: g711.ulaw_decode, PT_PCMA: g711.alaw_decode}

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
LINKTYPE_NULL, LINKTYPE_ETHERNET = 0, 1
ADHOC_FAMILIES = frozenset((2, 10, 28))
ADHOC_HEADER = struct.Struct("=HH16sdH")

#: A timestamp jump further than this from what the arrival times suggest is a
#: discontinuity (a new time base), not a gap to fill with silence.
MAX_TS_SKEW = 10 * RATE
WAVE_FORMAT_ALAW, WAVE_FORMAT_MULAW = 6, 7


class CaptureError(ValueError):
    pass


Endpoint = tuple[bytes, int]  # packed IP address, UDP port


@dataclass(frozen=True, slots=True)
class Datagram:
    arrival_s: float
    data: bytes
    #: where it was sent (pcap only): tells the directions of a single-file recording apart
    dst: Endpoint | None = None


@dataclass(frozen=True, slots=True)
class CapturedRtp:
    arrival_s: float
    seq: int
    ts: int
    ssrc: int
    pt: int
    payload: bytes


# --- loading ----------------------------------------------------------------


def load_capture(path: str) -> list[Datagram]:
    """Read a recording file, pcap or ad-hoc by its first bytes; tolerate a cut-off tail."""
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:4] in PCAP_MAGICS:
        return list(parse_pcap(blob, path))
    return list(parse_adhoc(blob, path))


def _warn(msg: str) -> None:
    print(f"extractaudio: {msg}", file=sys.stderr)


def parse_adhoc(blob: bytes, name: str = "input") -> Iterator[Datagram]:
    offset = 0
    while offset < len(blob):
        if len(blob) - offset < ADHOC_HEADER.size:
            _warn(f"{name}: truncated record at offset {offset}, ignored")
            return
        family, _port, _addr, arrival_s, plen = ADHOC_HEADER.unpack_from(blob, offset)
        if family not in ADHOC_FAMILIES:
            if offset == 0:
                raise CaptureError(f"{name}: not an rtpproxy recording")
            _warn(f"{name}: broken record at offset {offset}, rest ignored")
            return
        start = offset + ADHOC_HEADER.size
        if start + plen > len(blob):
            _warn(f"{name}: truncated record at offset {offset}, ignored")
            return
        if plen >= 12:
            yield Datagram(arrival_s, blob[start : start + plen])
        offset = start + plen


def parse_pcap(blob: bytes, name: str = "input") -> Iterator[Datagram]:
    if len(blob) < 24:
        raise CaptureError(f"{name}: truncated pcap header")
    endian, ticks = PCAP_MAGICS[blob[:4]]
    major, minor, _zone, _sigfigs, _snaplen, linktype = struct.unpack_from(
        endian + "HHiIII", blob, 4
    )
    if (major, minor) != (2, 4) or linktype not in (LINKTYPE_NULL, LINKTYPE_ETHERNET):
        raise CaptureError(f"{name}: unsupported pcap version {major}.{minor} or link {linktype}")
    rec = struct.Struct(endian + "IIII")
    offset = 24
    while offset < len(blob):
        if len(blob) - offset < rec.size:
            _warn(f"{name}: truncated pcap record at offset {offset}, ignored")
            return
        sec, frac, incl_len, _orig = rec.unpack_from(blob, offset)
        start = offset + rec.size
        if start + incl_len > len(blob):
            _warn(f"{name}: truncated pcap record at offset {offset}, ignored")
            return
        found = udp_datagram(blob[start : start + incl_len], linktype)
        if found is not None and len(found[0]) >= 12:
            yield Datagram(sec + frac / ticks, found[0], found[1])
        offset = start + incl_len


def udp_payload(frame: bytes, linktype: int) -> bytes | None:
    """UDP payload of an Ethernet (optionally VLAN-tagged) or NULL-link frame, else None."""
    found = udp_datagram(frame, linktype)
    return None if found is None else found[0]


def udp_datagram(frame: bytes, linktype: int) -> tuple[bytes, Endpoint] | None:
    """(UDP payload, destination) of an Ethernet or NULL-link frame, else None."""
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        ethertype, ip_at = struct.unpack_from("!H", frame, 12)[0], 14
        if ethertype == 0x8100 and len(frame) >= 18:
            ethertype, ip_at = struct.unpack_from("!H", frame, 16)[0], 18
        if ethertype not in (0x0800, 0x86DD):
            return None
    else:
        ip_at = 4
    return _ip_udp_payload(frame, ip_at)


def _ip_udp_payload(frame: bytes, ip_at: int) -> tuple[bytes, Endpoint] | None:
    if len(frame) <= ip_at:
        return None
    version = frame[ip_at] >> 4
    if version == 4:
        ihl = (frame[ip_at] & 0x0F) * 4
        if ihl < 20 or len(frame) < ip_at + ihl + 8 or frame[ip_at + 9] != 17:
            return None
        udp_at = ip_at + ihl
        dst_ip = frame[ip_at + 16 : ip_at + 20]
    elif version == 6:
        if len(frame) < ip_at + 48 or frame[ip_at + 6] != 17:
            return None
        udp_at = ip_at + 40
        dst_ip = frame[ip_at + 24 : ip_at + 40]
    else:
        return None
    dst_port, udp_len = struct.unpack_from("!2xHH", frame, udp_at)
    return frame[udp_at + 8 : udp_at + max(udp_len, 8)], (dst_ip, dst_port)


def parse_rtp(dgram: Datagram) -> CapturedRtp | None:
    """The RTP view of a datagram, or None for RTCP and malformed packets."""
    data = dgram.data
    if len(data) < RTP_HEADER_LENGTH:
        return None
    b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION or 72 <= (b1 & PT_MASK) <= 76:
        return None
    start = RTP_HEADER_LENGTH + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if len(data) < start + 4:
            return None
        start += 4 + 4 * struct.unpack_from("!H", data, start + 2)[0]
    end = len(data)
    if b0 & 0x20 and end > start:
        end -= data[-1]
    if end < start:
        return None
    return CapturedRtp(dgram.arrival_s, seq, ts, ssrc, b1 & PT_MASK, data[start:end])


# --- per-stream decoding -----------------------------------------------------


@dataclass(slots=True)
class StreamStats:
    ssrc: int
    packets: int = 0
    seq_first: int = -1
    seq_last: int = -1
    duplicates: int = 0
    lost: int = 0
    jitter: float = 0.0
    ignored: int = 0
    unsupported: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class Placed:
    start: int
    samples: array


def _signed(delta: int, bits: int) -> int:
    half = 1 << (bits - 1)
    return ((delta + half) % (1 << bits)) - half


def _audio_packets(
    packets: Iterable[CapturedRtp], stats: StreamStats
) -> list[tuple[int, CapturedRtp]]:
    """Decodable packets with their extended sequence numbers, duplicates dropped."""
    seen: set[int] = set()
    out: list[tuple[int, CapturedRtp]] = []
    ext = None
    for pkt in packets:
        stats.packets += 1
        if pkt.pt in IGNORED_PTS:
            stats.ignored += 1
            continue
        if pkt.pt not in DECODERS:
            stats.unsupported[pkt.pt] = stats.unsupported.get(pkt.pt, 0) + 1
            continue
        ext = pkt.seq if ext is None else ext + _signed(pkt.seq - (ext & 0xFFFF), 16)
        if ext in seen:
            stats.duplicates += 1
            continue
        seen.add(ext)
        out.append((ext, pkt))
    if seen:
        stats.seq_first, stats.seq_last = min(seen) & 0xFFFF, max(seen) & 0xFFFF
        stats.lost = max(seen) - min(seen) + 1 - len(seen)
    return out


def _timeline(audio: list[tuple[int, CapturedRtp]], stats: StreamStats) -> list[int]:
    """Sample offset of each packet relative to the first, from unwrapped timestamps."""
    positions: list[int] = []
    prev: CapturedRtp | None = None
    pos = 0
    for _, pkt in audio:
        if prev is not None:
            delta = _signed(pkt.ts - prev.ts, 32)
            expected = round((pkt.arrival_s - prev.arrival_s) * RATE)
            if abs(delta - expected) > MAX_TS_SKEW:
                delta = max(expected, 0)
            stats.jitter += (abs(expected - delta) - stats.jitter) / 16
            pos += delta
        positions.append(pos)
        prev = pkt
    return positions


def place_stream(
    packets: list[CapturedRtp], t0: float, fill_gaps: bool, stats: StreamStats
) -> Placed | None:
    audio = _audio_packets(packets, stats)
    if not audio:
        return None
    decoded = [array("h", _native(DECODERS[pkt.pt](pkt.payload))) for _, pkt in audio]
    if not fill_gaps:
        order = sorted(range(len(audio)), key=lambda i: audio[i][0])
        samples = array("h")
        for i in order:
            samples.extend(decoded[i])
        return Placed(0, samples)
    positions = _timeline(audio, stats)
    base = min(positions)
    length = max(p + len(d) for p, d in zip(positions, decoded, strict=True)) - base
    samples = array("h", bytes(2 * length))
    for p, d in zip(positions, decoded, strict=True):
        samples[p - base : p - base + len(d)] = d
    first_at = round((audio[0][1].arrival_s - t0) * RATE)
    return Placed(max(first_at + base, 0), samples)


def _native(pcm16le: bytes) -> bytes:
    if sys.byteorder == "little":
        return pcm16le
    swapped = array("h", pcm16le)
    swapped.byteswap()
    return swapped.tobytes()


# --- channels and mixing ---------------------------------------------------


@dataclass(slots=True)
class Channel:
    label: str
    path: str
    datagrams: list[Datagram]
    streams: list[StreamStats] = field(default_factory=list)
    placed: list[Placed] = field(default_factory=list)


def group_by_ssrc(datagrams: Iterable[Datagram]) -> dict[int, list[CapturedRtp]]:
    groups: dict[int, list[CapturedRtp]] = {}
    for dgram in datagrams:
        pkt = parse_rtp(dgram)
        if pkt is not None:
            groups.setdefault(pkt.ssrc, []).append(pkt)
    return groups


def decode_channel(channel: Channel, t0: float, fill_gaps: bool) -> None:
    for ssrc, packets in group_by_ssrc(channel.datagrams).items():
        stats = StreamStats(ssrc)
        placed = place_stream(packets, t0, fill_gaps, stats)
        channel.streams.append(stats)
        if placed is not None:
            channel.placed.append(placed)


def _clamp(value: int) -> int:
    return -32768 if value < -32768 else 32767 if value > 32767 else value


def render_channel(placed: list[Placed], length: int) -> array:
    """All streams of one channel summed onto one timeline, clipped to 16 bits."""
    out = array("h", bytes(2 * length))
    if len(placed) == 1:
        p = placed[0]
        out[p.start : p.start + len(p.samples)] = p.samples
        return out
    acc = [0] * length
    for p in placed:
        for i, s in enumerate(p.samples, p.start):
            acc[i] += s
    return array("h", map(_clamp, acc))


def mix_mono(a: array, b: array) -> array:
    """(a + b) / 2 per sample, rounding toward zero as C integer division does."""
    return array("h", (s >> 1 if s >= 0 else -(-s >> 1) for s in map(int.__add__, a, b)))


def interleave(left: array, right: array) -> array:
    out = array("h", bytes(4 * len(left)))
    out[0::2] = left
    out[1::2] = right
    return out


# --- output ----------------------------------------------------------------


def _pcm16le(samples: array) -> bytes:
    if sys.byteorder == "little":
        return samples.tobytes()
    swapped = array("h", samples)
    swapped.byteswap()
    return swapped.tobytes()


def _g711_wav(path: str, data: bytes, channels: int, format_tag: int) -> None:
    fmt = struct.pack("<HHIIHHH", format_tag, channels, RATE, RATE * channels, channels, 8, 0)
    frames = len(data) // channels
    body = b"".join(
        (
            b"WAVE",
            b"fmt " + struct.pack("<I", len(fmt)) + fmt,
            b"fact" + struct.pack("<II", 4, frames),
            b"data" + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1),
        )
    )
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)


def write_audio(path: str, samples: array, channels: int, file_fmt: str, data_fmt: str) -> None:
    pcm = _pcm16le(samples)
    if data_fmt == "pcm_16" and file_fmt == "wav":
        with open(path, "wb") as f, wave.open(f, "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(pcm)
        return
    if data_fmt == "ulaw":
        encoded = g711.ulaw_encode(pcm)
    elif data_fmt == "alaw":
        encoded = g711.alaw_encode(pcm)
    else:
        encoded = pcm
    if file_fmt == "raw":
        with open(path, "wb") as f:
            f.write(encoded)
        return
    tag = WAVE_FORMAT_MULAW if data_fmt == "ulaw" else WAVE_FORMAT_ALAW
    _g711_wav(path, encoded, channels, tag)


# --- command line ------------------------------------------------------------


@dataclass(slots=True)
class Options:
    idle: bool = False
    delete: bool = False
    stereo: bool = False
    fill_gaps: bool = True
    strict: bool = False
    scan: bool = False
    file_fmt: str = "wav"
    data_fmt: str = "pcm_16"
    answer: str | None = None
    originate: str | None = None
    args: list[str] = field(default_factory=list)


class UsageError(Exception):
    pass


def parse_args(argv: list[str]) -> Options:
    try:
        opts, args = getopt.getopt(argv, "idsneSF:D:A:B:", ["alice-crypto=", "bob-crypto="])
    except getopt.GetoptError as exc:
        raise UsageError(str(exc)) from exc
    o = Options(args=args)
    flags = {"-i": "idle", "-d": "delete", "-s": "stereo", "-e": "strict", "-S": "scan"}
    for opt, val in opts:
        if opt in flags:
            setattr(o, flags[opt], True)
        elif opt == "-n":
            o.fill_gaps = False
        elif opt == "-F":
            o.file_fmt = _choose(val.lower(), FILE_FORMATS, CLASSIC_FILE_FORMATS, "file")
        elif opt == "-D":
            o.data_fmt = _choose(val.lower(), DATA_FORMATS, CLASSIC_DATA_FORMATS, "data")
        elif opt == "-A":
            o.answer = val
        elif opt == "-B":
            o.originate = val
        else:
            raise UsageError(f"{opt}: SRTP decryption is not supported")
    return o


def _choose(name: str, supported: tuple[str, ...], classic: list[str], kind: str) -> str:
    if name in supported:
        return name
    why = "not supported by this version" if name in classic else "unknown"
    raise UsageError(f"{name}: {why} {kind} format; supported: {', '.join(supported)}")


def _inputs(o: Options) -> tuple[list[tuple[str, str]], list[str]]:
    """[(label, path)] of the captures to read, and the remaining outfile/link arguments."""
    args = list(o.args)
    if o.answer is None and o.originate is None:
        if not args:
            raise UsageError("missing rdir")
        rdir = args.pop(0)
        return [("A", f"{rdir}.a.rtp"), ("B", f"{rdir}.o.rtp")], args
    pairs = [("A", o.answer), ("B", o.originate)]
    return [(label, path) for label, path in pairs if path is not None], args


def _load(inputs: list[tuple[str, str]]) -> tuple[list[Channel], list[str]]:
    channels: list[Channel] = []
    failed: list[str] = []
    for label, path in inputs:
        try:
            channels.append(Channel(label, path, load_capture(path)))
        except (OSError, CaptureError) as exc:
            _warn(f"{path}: can't load: {getattr(exc, 'strerror', None) or exc}")
            failed.append(path)
    return channels, failed


def rtp_destinations(datagrams: Iterable[Datagram]) -> list[Endpoint]:
    """Where the RTP of a capture was sent, in order of first appearance."""
    seen: dict[Endpoint, None] = {}
    for dgram in datagrams:
        if dgram.dst is not None and dgram.dst not in seen and parse_rtp(dgram) is not None:
            seen[dgram.dst] = None
    return list(seen)


def split_directions(channels: list[Channel]) -> list[Channel]:
    """One capture holding both directions (a single-file pcap) -> channels A and B.

    Applies when a single file was given (with ``-A``, ``-B`` or both) and its RTP
    went to exactly two destinations, i.e. the proxy ports the two parties sent to.
    Such a file does not say which party answered: the direction whose first packet
    comes first is channel A, the other channel B (RTCP stays with A, unused).
    """
    if len({os.path.realpath(ch.path) for ch in channels}) != 1:
        return channels
    first = channels[0]
    dests = rtp_destinations(first.datagrams)
    if len(dests) != 2:
        return channels
    b_dst = dests[1]
    a_part = [d for d in first.datagrams if d.dst != b_dst]
    b_part = [d for d in first.datagrams if d.dst == b_dst]
    return [Channel("A", first.path, a_part), Channel("B", first.path, b_part)]


def scan(inputs: list[tuple[str, str]]) -> int:
    channels, failed = _load(inputs)
    for ch in channels:
        print(f"{ch.path}: {len(ch.datagrams)}")
    return EXIT_USAGE if failed or not channels else EXIT_OK


def print_stats(channel: Channel) -> None:
    print(f"{channel.path}: {len(channel.datagrams)} packets (channel {channel.label})")
    for s in channel.streams:
        print(
            f"  SSRC 0x{s.ssrc:08X}: {s.packets} packets, seq {s.seq_first}-{s.seq_last}, "
            f"lost {s.lost}, duplicates {s.duplicates}, jitter {s.jitter:.2f}"
        )
        if s.ignored:
            print(f"    {s.ignored} comfort noise / telephone-event packets ignored")
        for pt, count in sorted(s.unsupported.items()):
            print(f"    {count} packets with unsupported payload type {pt} skipped")


def render(channels: list[Channel], stereo: bool) -> tuple[array, int]:
    by_label = {ch.label: ch.placed for ch in channels}
    length = max((p.start + len(p.samples) for ch in channels for p in ch.placed), default=0)
    a = render_channel(by_label.get("A", []), length)
    b = render_channel(by_label.get("B", []), length)
    if stereo:
        return interleave(a, b), 2
    if not by_label.get("A"):
        return b, 1
    if not by_label.get("B"):
        return a, 1
    return mix_mono(a, b), 1


def _link(outfile: str, links: list[str]) -> bool:
    ok = True
    for link in links:
        try:
            if os.path.lexists(link):
                os.unlink(link)
            os.link(outfile, link)
        except OSError as exc:
            _warn(f"can't link {outfile} to {link}: {exc.strerror}")
            ok = False
    return ok


def extract(o: Options) -> int:
    inputs, rest = _inputs(o)
    if not rest:
        raise UsageError("missing outfile")
    outfile, links = rest[0], rest[1:]
    channels, failed = _load(inputs)
    if not channels or (failed and o.strict):
        return EXIT_USAGE
    channels = split_directions(channels)
    t0 = min((d.arrival_s for ch in channels for d in ch.datagrams), default=0.0)
    if not math.isfinite(t0):
        t0 = 0.0
    for ch in channels:
        decode_channel(ch, t0, o.fill_gaps)
        print_stats(ch)
    samples, nchannels = render(channels, o.stereo)
    try:
        write_audio(outfile, samples, nchannels, o.file_fmt, o.data_fmt)
    except OSError as exc:
        _warn(f"can't create output file {outfile}: {exc.strerror}")
        return EXIT_OUTPUT
    frames = len(samples) // nchannels
    print(
        f"{outfile}: {frames} samples, {frames / RATE:.2f} s, {nchannels} channel(s)",
        file=sys.stderr,
    )
    if not _link(outfile, links):
        return EXIT_USAGE
    if o.delete:
        for path in dict.fromkeys(ch.path for ch in channels):
            try:
                os.unlink(path)
            except OSError as exc:
                _warn(f"can't delete {path}: {exc.strerror}")
    return EXIT_OK


def main(argv: list[str]) -> int:
    """``argv`` excludes the program name. Returns the classic exit status."""
    try:
        o = parse_args(argv)
        if o.idle:
            try:
                os.nice(19)
            except OSError:
                pass
        if o.scan:
            inputs, rest = _inputs(o)
            if rest:
                raise UsageError("scan mode takes no output file")
            return scan(inputs)
        return extract(o)
    except UsageError as exc:
        _warn(str(exc))
        sys.stderr.write(USAGE)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
