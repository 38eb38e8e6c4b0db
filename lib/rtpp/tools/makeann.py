"""``makeann``: encode a prompt for the player (the classic ``makeann/makeann.c``).

``makeann [-l limit [-L]] infile [outfile_template]``

Input is raw signed 16-bit little-endian PCM, 8000 Hz, mono; a WAV file
(``RIFF``/``WAVE``) holding exactly that is also accepted and its header
skipped. A ``data`` size of 0, 0xFFFFFFFF or past the end of the file (as
streamed WAVs have) means "to the end of the file". Input that holds not a
single sample is an error; only an empty file gives empty outputs. Writes
``<template>.0`` (PCMU) and ``<template>.8`` (PCMA), raw payload bytes, one
byte per input sample. The classic works in 160-sample blocks and writes a
final partial block at its real length; for G.711, which encodes every sample
on its own, that is the same as encoding the whole input at once.
"""

from __future__ import annotations

import getopt
import struct
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

from rtpp.tools.g711 import alaw_encode, ulaw_encode

PROG = "makeann"
USAGE = "usage: makeann [-l limit [-L]] infile [outfile_template]\n"

SAMPLE_RATE = 8000
SAMPLE_BYTES = 2
#: Output files in the order the classic creates them: (payload type, encoder).
ENCODERS: tuple[tuple[int, Callable[[bytes], bytes]], ...] = (
    (0, ulaw_encode),
    (8, alaw_encode),
)

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
RIFF_HEADER = struct.Struct("<4sI4s")
CHUNK_HEADER = struct.Struct("<4sI")
FMT_CHUNK = struct.Struct("<HHIIHH")
#: ``data`` chunk size a streaming writer leaves when it cannot seek back.
STREAMED_SIZE = 0xFFFFFFFF


class MakeannError(Exception):
    """A fatal error: the message is printed after ``makeann: ``, exit status 1."""


class UsageError(Exception):
    """Bad command line: an optional message, then the usage text, exit status 1."""


@dataclass(frozen=True, slots=True)
class Options:
    infile: str
    template: str
    limit: int | None = None
    loop: bool = False


def parse_args(argv: list[str]) -> Options:
    try:
        # glibc getopt (which the classic uses on Linux) permutes arguments.
        opts, args = getopt.gnu_getopt(argv, "l:L")
    except getopt.GetoptError as exc:
        raise UsageError(exc.msg) from None
    limit: int | None = None
    loop = False
    for opt, value in opts:
        if opt == "-l":
            limit = _parse_limit(value)
        else:
            loop = True
    if not 1 <= len(args) <= 2:
        raise UsageError(None)
    if loop and limit is None:
        raise MakeannError("limit have to be specified in the loop mode")
    return Options(args[0], args[-1], limit, loop)


def _parse_limit(value: str) -> int:
    try:
        limit = int(value, 10)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise MakeannError(f"invalid limit {value!r}: a positive number of samples is needed")
    return limit


def wav_pcm(data: bytes, path: str) -> bytes:
    """The sample data of a WAV file, which must be 16-bit PCM, mono, 8000 Hz."""
    fmt: tuple[int, int, int, int] | None = None
    pos = RIFF_HEADER.size
    while pos + CHUNK_HEADER.size <= len(data):
        chunk_id, size = CHUNK_HEADER.unpack_from(data, pos)
        start = pos + CHUNK_HEADER.size
        body = data[start : start + size]
        if chunk_id == b"fmt ":
            fmt = _wav_format(body, path)
        elif chunk_id == b"data":
            if fmt is None:
                raise MakeannError(f"{path}: WAV data chunk comes before the fmt chunk")
            tag, channels, rate, bits = fmt
            if (tag, channels, rate, bits) != (WAVE_FORMAT_PCM, 1, SAMPLE_RATE, 16):
                raise MakeannError(
                    f"{path}: unsupported WAV format (format tag {tag:#06x}, "
                    f"{channels} channel(s), {rate} Hz, {bits} bits per sample); "
                    "need 16-bit PCM, mono, 8000 Hz"
                )
            if size in (0, STREAMED_SIZE) or start + size > len(data):
                # Streamed: the writer never filled the size in.
                return data[start:]
            return body
        pos += CHUNK_HEADER.size + size + (size & 1)
    raise MakeannError(f"{path}: WAV file has no {'data' if fmt else 'fmt'} chunk")


def _wav_format(body: bytes, path: str) -> tuple[int, int, int, int]:
    if len(body) < FMT_CHUNK.size:
        raise MakeannError(f"{path}: WAV fmt chunk is {len(body)} bytes, need {FMT_CHUNK.size}")
    tag, channels, rate, _byte_rate, _align, bits = FMT_CHUNK.unpack_from(body)
    if tag == WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
        # cbSize, valid bits, channel mask, then the sub-format GUID whose
        # first two bytes are the real format tag.
        tag = struct.unpack_from("<H", body, 24)[0]
    return tag, channels, rate, bits


def is_wav(data: bytes) -> bool:
    return len(data) >= RIFF_HEADER.size and data[:4] == b"RIFF" and data[8:12] == b"WAVE"


def select_samples(pcm: bytes, limit: int | None, loop: bool) -> bytes:
    """Apply ``-l``/``-L`` to s16le input; a trailing odd byte is not a sample."""
    pcm = pcm[: len(pcm) - len(pcm) % SAMPLE_BYTES]
    if limit is None:
        return pcm
    want = limit * SAMPLE_BYTES
    if loop and pcm and len(pcm) < want:
        pcm = pcm * -(-want // len(pcm))
    return pcm[:want]


def read_input(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise MakeannError(f"can't open {path} for reading: {exc.strerror}") from None
    if not is_wav(data):
        if 0 < len(data) < SAMPLE_BYTES:
            raise MakeannError(f"{path}: no samples ({len(data)} byte, a sample is 16 bits)")
        return data
    pcm = wav_pcm(data, path)
    if len(pcm) < SAMPLE_BYTES:
        raise MakeannError(f"{path}: no samples in the WAV data chunk")
    return pcm


def write_outputs(template: str, pcm: bytes) -> None:
    with ExitStack() as stack:
        files = []
        for pt, encode in ENCODERS:
            path = f"{template}.{pt}"
            try:
                files.append((path, encode, stack.enter_context(open(path, "wb"))))
            except OSError as exc:
                raise MakeannError(f"can't open {path} for writing: {exc.strerror}") from None
        for path, encode, f in files:
            try:
                f.write(encode(pcm))
                f.flush()
            except OSError:
                raise MakeannError(f"can't write to {path}") from None


def run(options: Options) -> None:
    pcm = read_input(options.infile)
    write_outputs(options.template, select_samples(pcm, options.limit, options.loop))


def main(argv: list[str]) -> int:
    """Run with the arguments after the program name; returns the exit status."""
    try:
        run(parse_args(argv))
    except UsageError as exc:
        if exc.args[0]:
            sys.stderr.write(f"{PROG}: {exc.args[0]}\n")
        sys.stderr.write(USAGE)
        return 1
    except MakeannError as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return 1
    return 0
