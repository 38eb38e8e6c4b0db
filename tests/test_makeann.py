import math
import struct
from pathlib import Path

import pytest

from rtpp.tools.g711 import alaw_encode, ulaw_encode
from rtpp.tools.makeann import USAGE, main

RATE = 8000


def tone(n: int, freq: float = 440.0, amplitude: int = 12000) -> bytes:
    return b"".join(
        struct.pack("<h", round(amplitude * math.sin(2 * math.pi * freq * i / RATE)))
        for i in range(n)
    )


def wav(
    pcm: bytes,
    rate: int = RATE,
    channels: int = 1,
    bits: int = 16,
    tag: int = 1,
    extra_chunks: bytes = b"",
) -> bytes:
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    if tag == 0xFFFE:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt += struct.pack("<HHI", 22, bits, 0x4) + struct.pack("<H", 1) + guid_tail
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + extra_chunks
        + b"data"
        + struct.pack("<I", len(pcm))
        + pcm
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_tone_encodes_to_pcmu_and_pcma(workdir):
    pcm = tone(8100)  # 50 full 160-sample blocks and a partial one
    (workdir / "tone.raw").write_bytes(pcm)
    assert main(["tone.raw", "out"]) == 0
    assert (workdir / "out.0").read_bytes() == ulaw_encode(pcm)
    assert (workdir / "out.8").read_bytes() == alaw_encode(pcm)
    assert (workdir / "out.0").stat().st_size == 8100
    assert (workdir / "out.8").stat().st_size == 8100


def test_known_g711_code_words(workdir):
    pcm = struct.pack("<4h", 0, 32767, -32768, 0)
    (workdir / "edges.raw").write_bytes(pcm)
    assert main(["edges.raw"]) == 0
    assert (workdir / "edges.raw.0").read_bytes() == bytes([0xFF, 0x80, 0x00, 0xFF])
    assert (workdir / "edges.raw.8").read_bytes() == bytes([0xD5, 0xAA, 0x2A, 0xD5])


def test_template_defaults_to_the_input_name(workdir):
    (workdir / "in").write_bytes(tone(160))
    assert main(["in"]) == 0
    assert (workdir / "in.0").exists()
    assert (workdir / "in.8").exists()


def test_trailing_odd_byte_is_not_a_sample(workdir):
    pcm = tone(10)
    (workdir / "odd.raw").write_bytes(pcm + b"\x7f")
    assert main(["odd.raw", "o"]) == 0
    assert (workdir / "o.0").read_bytes() == ulaw_encode(pcm)


def test_empty_input_gives_empty_files(workdir):
    (workdir / "empty").write_bytes(b"")
    assert main(["empty", "e"]) == 0
    assert (workdir / "e.0").read_bytes() == b""
    assert (workdir / "e.8").read_bytes() == b""


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"tag": 0xFFFE},
        {"extra_chunks": b"LIST" + struct.pack("<I", 5) + b"INFOx" + b"\x00"},
    ],
)
def test_wav_input_equals_raw_input(workdir, kwargs):
    pcm = tone(1234, freq=1000.0)
    (workdir / "a.raw").write_bytes(pcm)
    (workdir / "a.wav").write_bytes(wav(pcm, **kwargs))
    assert main(["a.raw", "raw"]) == 0
    assert main(["a.wav", "wav"]) == 0
    for pt in (0, 8):
        assert (workdir / f"wav.{pt}").read_bytes() == (workdir / f"raw.{pt}").read_bytes()


@pytest.mark.parametrize(
    ("kwargs", "detail"),
    [
        ({"channels": 2}, "2 channel"),
        ({"rate": 16000}, "16000 Hz"),
        ({"bits": 8}, "8 bits"),
        ({"tag": 3, "bits": 32}, "format tag 0x0003"),
        ({"tag": 6, "bits": 8}, "format tag 0x0006"),
    ],
)
def test_unsupported_wav_is_a_clear_error(workdir, capsys, kwargs, detail):
    (workdir / "bad.wav").write_bytes(wav(tone(100), **kwargs))
    assert main(["bad.wav", "bad"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("makeann: bad.wav: unsupported WAV format")
    assert detail in err
    assert "need 16-bit PCM, mono, 8000 Hz" in err
    assert not (workdir / "bad.0").exists()


def test_wav_without_data_chunk_is_an_error(workdir, capsys):
    data = wav(b"")
    (workdir / "nodata.wav").write_bytes(data[: data.index(b"data")])
    assert main(["nodata.wav"]) == 1
    assert "WAV file has no data chunk" in capsys.readouterr().err


def streamed(pcm: bytes, size: int) -> bytes:
    """A WAV as a streaming writer leaves it: the sizes are not the real ones."""
    data = bytearray(wav(pcm))
    struct.pack_into("<I", data, 4, size)
    struct.pack_into("<I", data, data.index(b"data") + 4, size)
    return bytes(data)


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF, 2 * 1234 + 1000])
def test_streamed_wav_data_runs_to_the_end_of_the_file(workdir, size):
    pcm = tone(1234, freq=1000.0)
    (workdir / "s.wav").write_bytes(streamed(pcm + b"\x01", size))
    assert main(["s.wav", "s"]) == 0
    assert (workdir / "s.0").read_bytes() == ulaw_encode(pcm)
    assert (workdir / "s.8").read_bytes() == alaw_encode(pcm)


@pytest.mark.parametrize(
    ("name", "data", "detail"),
    [
        ("head.wav", streamed(b"", 0), "no samples in the WAV data chunk"),
        ("one.wav", wav(b"\x01"), "no samples in the WAV data chunk"),
        ("one.raw", b"\x01", "no samples (1 byte, a sample is 16 bits)"),
    ],
    ids=["header-only-wav", "one-byte-wav", "one-byte-raw"],
)
def test_input_without_a_single_sample_is_an_error(workdir, capsys, name, data, detail):
    (workdir / name).write_bytes(data)
    assert main([name, "out"]) == 1
    assert capsys.readouterr().err == f"makeann: {name}: {detail}\n"
    assert not (workdir / "out.0").exists()
    assert not (workdir / "out.8").exists()


def test_limit_stops_after_n_samples(workdir):
    pcm = tone(1000)
    (workdir / "in").write_bytes(pcm)
    assert main(["-l", "300", "in", "l"]) == 0
    assert (workdir / "l.0").read_bytes() == ulaw_encode(pcm[:600])
    assert main(["-l", "5000", "in", "big"]) == 0
    assert (workdir / "big.8").read_bytes() == alaw_encode(pcm)


def test_limit_with_loop_repeats_the_input(workdir):
    pcm = tone(100)
    (workdir / "in").write_bytes(pcm)
    assert main(["-l", "250", "-L", "in", "loop"]) == 0
    assert (workdir / "loop.0").read_bytes() == ulaw_encode((pcm * 3)[:500])


def test_options_may_follow_operands(workdir):
    (workdir / "in").write_bytes(tone(100))
    assert main(["in", "late", "-l", "10"]) == 0
    assert len((workdir / "late.0").read_bytes()) == 10


def test_loop_without_limit_is_an_error(workdir, capsys):
    (workdir / "in").write_bytes(tone(100))
    assert main(["-L", "in"]) == 1
    err = capsys.readouterr().err
    assert err == "makeann: limit have to be specified in the loop mode\n"
    assert not (workdir / "in.0").exists()


@pytest.mark.parametrize("value", ["0", "-5", "abc", ""])
def test_limit_must_be_positive(workdir, capsys, value):
    (workdir / "in").write_bytes(tone(100))
    assert main(["-l", value, "in"]) == 1
    assert capsys.readouterr().err.startswith("makeann: invalid limit")


@pytest.mark.parametrize("argv", [[], ["a", "b", "c"], ["-x", "in"], ["-l"]])
def test_bad_command_line_prints_usage(workdir, capsys, argv):
    (workdir / "in").write_bytes(tone(100))
    assert main(argv) == 1
    assert capsys.readouterr().err.endswith(USAGE)


def test_usage_text_matches_the_classic():
    assert USAGE == "usage: makeann [-l limit [-L]] infile [outfile_template]\n"


def test_missing_input_is_an_error(workdir, capsys):
    assert main(["nothere", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("makeann: can't open nothere for reading: ")
    assert not (workdir / "x.0").exists()


def test_unwritable_output_is_an_error(workdir, capsys):
    (workdir / "in").write_bytes(tone(100))
    assert main(["in", "no/such/dir/out"]) == 1
    assert capsys.readouterr().err.startswith("makeann: can't open no/such/dir/out.0 for writing")
