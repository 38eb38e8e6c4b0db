"""G.711 mu-law and A-law codecs (PCMU, payload type 0; PCMA, payload type 8).

Bit-exact with the classic Sun Microsystems ``g711.c`` reference: mu-law
encodes the top 14 bits of a sample, A-law the top 13 bits. All conversions
go through tables built once at import, so a 20 ms packet costs a couple of
C-level passes over its bytes.

Linear audio is signed 16-bit little-endian (s16le) throughout. A trailing
odd byte of linear input is ignored, as when the samples are read with
``fread(..., sizeof(int16_t), ...)``.
"""

import itertools
import sys
from array import array
from collections.abc import Callable

ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5

_BIAS = 0x84
_ULAW_CLIP = 8159
_ULAW_SEG_END = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_ALAW_SEG_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _segment(value: int, seg_end: tuple[int, ...]) -> int:
    for seg, end in enumerate(seg_end):
        if value <= end:
            return seg
    return len(seg_end)


def _ulaw_from_14bit(value: int) -> int:
    if value < 0:
        value, mask = -value, 0x7F
    else:
        mask = 0xFF
    value = min(value, _ULAW_CLIP) + (_BIAS >> 2)
    seg = _segment(value, _ULAW_SEG_END)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((value >> (seg + 1)) & 0x0F)) ^ mask


def _alaw_from_13bit(value: int) -> int:
    if value >= 0:
        mask = 0xD5
    else:
        value, mask = -value - 1, 0x55
    seg = _segment(value, _ALAW_SEG_END)
    if seg >= 8:
        return 0x7F ^ mask
    shift = 1 if seg < 2 else seg
    return ((seg << 4) | ((value >> shift) & 0x0F)) ^ mask


def ulaw_to_linear(code: int) -> int:
    """Decode one mu-law byte to a signed 16-bit sample."""
    code = ~code & 0xFF
    t = (((code & 0x0F) << 3) + _BIAS) << ((code & 0x70) >> 4)
    return _BIAS - t if code & 0x80 else t - _BIAS


def alaw_to_linear(code: int) -> int:
    """Decode one A-law byte to a signed 16-bit sample."""
    code ^= 0x55
    t = (code & 0x0F) << 4
    seg = (code & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if code & 0x80 else -t


def linear_to_ulaw(sample: int) -> int:
    """Encode one signed 16-bit sample to a mu-law byte."""
    return _ULAW_ENC[sample & 0xFFFF]


def linear_to_alaw(sample: int) -> int:
    """Encode one signed 16-bit sample to an A-law byte."""
    return _ALAW_ENC[sample & 0xFFFF]


def _encode_table(per_value: list[int], shift: int) -> bytes:
    """Expand a table indexed by ``u16 >> shift`` to one indexed by the raw u16."""
    return bytes(itertools.chain.from_iterable(zip(*([per_value] * (1 << shift)), strict=True)))


def _build_encode_table(encode_one: Callable[[int], int], bits: int) -> bytes:
    half = 1 << (bits - 1)
    # Index i is the unsigned view of the top ``bits`` bits of a u16 sample.
    per_value = [encode_one(i - (1 << bits) if i >= half else i) for i in range(1 << bits)]
    return _encode_table(per_value, 16 - bits)


def _build_decode_table(decode_one: Callable[[int], int]) -> tuple[bytes, ...]:
    return tuple(decode_one(code).to_bytes(2, "little", signed=True) for code in range(256))


_ULAW_ENC: bytes = _build_encode_table(_ulaw_from_14bit, 14)
_ALAW_ENC: bytes = _build_encode_table(_alaw_from_13bit, 13)
_ULAW_DEC: tuple[bytes, ...] = _build_decode_table(ulaw_to_linear)
_ALAW_DEC: tuple[bytes, ...] = _build_decode_table(alaw_to_linear)


def _samples_u16(pcm16le: bytes) -> array:
    samples = array("H")
    samples.frombytes(pcm16le[: len(pcm16le) & ~1])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def ulaw_encode(pcm16le: bytes) -> bytes:
    """Encode s16le linear audio to mu-law, one byte per sample."""
    return bytes(map(_ULAW_ENC.__getitem__, _samples_u16(pcm16le)))


def alaw_encode(pcm16le: bytes) -> bytes:
    """Encode s16le linear audio to A-law, one byte per sample."""
    return bytes(map(_ALAW_ENC.__getitem__, _samples_u16(pcm16le)))


def ulaw_decode(data: bytes) -> bytes:
    """Decode mu-law bytes to s16le linear audio, two bytes per sample."""
    return b"".join(map(_ULAW_DEC.__getitem__, data))


def alaw_decode(data: bytes) -> bytes:
    """Decode A-law bytes to s16le linear audio, two bytes per sample."""
    return b"".join(map(_ALAW_DEC.__getitem__, data))
