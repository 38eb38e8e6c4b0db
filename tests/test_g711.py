import math
import struct
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtpp.tools import g711

ALL_PCM = struct.pack("<65536h", *range(-32768, 32768))
ALL_CODES = bytes(range(256))


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def samples(data: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(data) // 2}h", data)


@pytest.mark.parametrize(
    ("sample", "ulaw", "alaw"),
    [
        (0, 0xFF, 0xD5),
        (-1, 0x7E, 0x55),
        (8, 0xFE, 0xD5),
        (100, 0xF2, 0xD3),
        (-100, 0x72, 0x53),
        (1000, 0xCE, 0xFA),
        (32767, 0x80, 0xAA),
        (-32768, 0x00, 0x2A),
    ],
)
def test_encode_known_vectors(sample: int, ulaw: int, alaw: int) -> None:
    assert g711.ulaw_encode(pcm(sample)) == bytes([ulaw])
    assert g711.alaw_encode(pcm(sample)) == bytes([alaw])
    assert g711.linear_to_ulaw(sample) == ulaw
    assert g711.linear_to_alaw(sample) == alaw


@pytest.mark.parametrize(
    ("code", "ulaw_value", "alaw_value"),
    [
        (0x00, -32124, -5504),
        (0x80, 32124, 5504),
        (0xFF, 0, 848),
        (0x7F, 0, -848),
        (0xD5, 716, 8),
        (0x55, -716, -8),
        (0xAA, 5372, 32256),
        (0x2A, -5372, -32256),
    ],
)
def test_decode_known_vectors(code: int, ulaw_value: int, alaw_value: int) -> None:
    assert samples(g711.ulaw_decode(bytes([code]))) == (ulaw_value,)
    assert samples(g711.alaw_decode(bytes([code]))) == (alaw_value,)


def test_every_ulaw_code_reencodes_to_itself_except_negative_zero() -> None:
    reencoded = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES))
    assert [c for c in range(256) if reencoded[c] != c] == [0x7F]
    assert reencoded[0x7F] == 0xFF


def test_every_alaw_code_reencodes_to_itself() -> None:
    assert g711.alaw_encode(g711.alaw_decode(ALL_CODES)) == ALL_CODES


def test_decoders_are_odd_symmetric() -> None:
    u, a = samples(g711.ulaw_decode(ALL_CODES)), samples(g711.alaw_decode(ALL_CODES))
    for code in range(128):
        assert u[code] == -u[code | 0x80]
        assert a[code] == -a[code | 0x80]


def test_encoders_are_monotonic() -> None:
    for decode, encode in (
        (g711.ulaw_decode, g711.ulaw_encode),
        (g711.alaw_decode, g711.alaw_encode),
    ):
        values = samples(decode(encode(ALL_PCM)))
        assert all(x <= y for x, y in zip(values, values[1:], strict=False))


def _max_error(value: int, law: str) -> int:
    """Half a quantization step of the segment holding ``value``, in 16-bit units.

    Negative inputs are floored by the encoder's right shift, so their magnitude
    can move into the next segment.
    """
    mag = min(abs(value), 32124 if law == "ulaw" else 32256)
    clip = abs(value) - mag
    if law == "ulaw":
        step = 8 << max(0, (mag + 136).bit_length() - 8)
    else:
        step = 16 << max(0, (mag + 8).bit_length() - 9)
    return clip + step // 2 + 4


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_round_trip_error_within_half_a_step(law: str) -> None:
    enc, dec = (
        (g711.ulaw_encode, g711.ulaw_decode)
        if law == "ulaw"
        else (g711.alaw_encode, g711.alaw_decode)
    )
    back = samples(dec(enc(ALL_PCM)))
    for value, got in zip(range(-32768, 32768), back, strict=True):
        assert abs(got - value) <= _max_error(value, law), (value, got)


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_round_trip_of_a_tone_has_high_snr(law: str) -> None:
    tone = [round(12000 * math.sin(2 * math.pi * 1000 * n / 8000)) for n in range(800)]
    enc, dec = (
        (g711.ulaw_encode, g711.ulaw_decode)
        if law == "ulaw"
        else (g711.alaw_encode, g711.alaw_decode)
    )
    back = samples(dec(enc(pcm(*tone))))
    noise = sum((x - y) ** 2 for x, y in zip(tone, back, strict=True))
    signal = sum(x * x for x in tone)
    assert 10 * math.log10(signal / noise) > 35


def test_lengths_and_odd_trailing_byte() -> None:
    assert g711.ulaw_encode(b"") == b"" and g711.alaw_decode(b"") == b""
    assert g711.ulaw_encode(pcm(1, 2, 3) + b"\x7f") == g711.ulaw_encode(pcm(1, 2, 3))
    assert len(g711.alaw_decode(bytes(160))) == 320


@given(st.binary(max_size=400))
def test_decode_encode_decode_is_stable(data: bytes) -> None:
    for enc, dec in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        once = dec(data)
        assert dec(enc(once)) == once


def test_bit_exact_with_audioop_when_available() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    assert g711.ulaw_encode(ALL_PCM) == audioop.lin2ulaw(ALL_PCM, 2)
    assert g711.alaw_encode(ALL_PCM) == audioop.lin2alaw(ALL_PCM, 2)
    assert g711.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)
