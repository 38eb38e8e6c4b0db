import math
import os
import struct
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from helpers import REPO
from rtpp.media.recording.record import WRITER, Recorder, RecordFormat
from rtpp.tools import g711
from rtpp.tools.extractaudio import main

T0 = 1_700_000_000.0
PROXY = ("198.51.100.1", 40000)
ALICE = ("192.0.2.1", 5000)
BOB = ("192.0.2.2", 6000)
ENCODERS = {0: g711.ulaw_encode, 8: g711.alaw_encode}
DECODERS = {0: g711.ulaw_decode, 8: g711.alaw_decode}


def tone(freq: float, n: int, amp: int = 10000) -> list[int]:
    return [round(amp * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n)]


def round_trip(samples: list[int], pt: int) -> list[int]:
    pcm = struct.pack(f"<{len(samples)}h", *samples)
    out = DECODERS[pt](ENCODERS[pt](pcm))
    return list(struct.unpack(f"<{len(samples)}h", out))


def rtp(seq: int, ts: int, ssrc: int, pt: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def packets_for(
    samples: list[int], pt: int, ssrc: int, seq0: int = 100, ts0: int = 5000
) -> list[tuple[int, bytes]]:
    """(index, RTP packet) for each 20 ms frame of ``samples``."""
    pcm = struct.pack(f"<{len(samples)}h", *samples)
    coded = ENCODERS[pt](pcm)
    return [
        (i, rtp(seq0 + i, ts0 + 160 * i, ssrc, pt, coded[160 * i : 160 * (i + 1)]))
        for i in range(len(coded) // 160)
    ]


def write_rec(
    path: Path,
    fmt: RecordFormat,
    packets: list[tuple[int, bytes]],
    src: tuple[str, int],
    start: float = T0,
) -> Path:
    rec = Recorder(path.name, str(path.parent), fmt=fmt)
    for i, pkt in packets:
        rec.write(pkt, src, PROXY, start + 0.02 * i)
    rec.close()
    assert WRITER.drain(timeout=10)
    return path


def read_wav(path: Path) -> tuple[int, list[int]]:
    with wave.open(str(path)) as w:
        assert w.getframerate() == 8000 and w.getsampwidth() == 2
        data = w.readframes(w.getnframes())
        return w.getnchannels(), list(struct.unpack(f"<{len(data) // 2}h", data))


def c_half(a: int, b: int) -> int:
    s = a + b
    return s // 2 if s >= 0 else -((-s) // 2)


@pytest.fixture
def call(tmp_path: Path) -> dict:
    """Answerer 1 kHz PCMU, originator 440 Hz PCMA starting 100 ms later, ad-hoc format."""
    a = tone(1000, 8000)
    b = tone(440, 7200, 8000)
    base = tmp_path / "cid=ftag"
    write_rec(tmp_path / "cid=ftag.a.rtp", RecordFormat.ADHOC, packets_for(a, 0, 0xA), BOB)
    write_rec(
        tmp_path / "cid=ftag.o.rtp", RecordFormat.ADHOC, packets_for(b, 8, 0xB), ALICE, T0 + 0.1
    )
    return {"base": base, "a": round_trip(a, 0), "b": round_trip(b, 8), "dir": tmp_path}


@pytest.mark.parametrize("fmt", list(RecordFormat))
def test_single_direction_decodes_sample_for_sample(tmp_path: Path, fmt: RecordFormat) -> None:
    samples = tone(1000, 1600)
    write_rec(tmp_path / "c=t.a.rtp", fmt, packets_for(samples, 0, 1), BOB)
    out = tmp_path / "out.wav"
    assert main([str(tmp_path / "c=t"), str(out)]) == 0
    assert read_wav(out) == (1, round_trip(samples, 0))


def test_mono_mix_of_both_directions(call: dict, capsys: pytest.CaptureFixture) -> None:
    out = call["dir"] / "mono.wav"
    assert main([str(call["base"]), str(out)]) == 0
    channels, got = read_wav(out)
    a, b = call["a"], [0] * 800 + call["b"]
    assert channels == 1 and len(got) == 8000
    assert got == [c_half(x, y) for x, y in zip(a, b, strict=True)]
    stdout = capsys.readouterr().out
    assert "SSRC 0x0000000A: 50 packets" in stdout and "lost 0" in stdout


def test_stereo_keeps_directions_apart(call: dict) -> None:
    out = call["dir"] / "stereo.wav"
    assert main(["-s", str(call["base"]), str(out)]) == 0
    channels, got = read_wav(out)
    assert channels == 2
    assert got[0::2] == call["a"]
    assert got[1::2] == [0] * 800 + call["b"]


@pytest.fixture
def single_file(tmp_path: Path) -> dict:
    """A single-file pcap (Rs, -a -P): both directions and RTCP in one file."""
    a, b = tone(1000, 800), tone(300, 800)
    rec = Recorder("c=t.pcap", str(tmp_path), fmt=RecordFormat.PCAP)
    pa, pb = packets_for(a, 0, 0xA), packets_for(b, 0, 0xB, seq0=9000, ts0=77)
    for (i, x), (_, y) in zip(pa, pb, strict=True):
        rec.write(x, BOB, PROXY, T0 + 0.02 * i)
        rec.write(y, ALICE, ("198.51.100.1", 40002), T0 + 0.02 * i + 0.001)
        rec.write(b"\x81\xc8" + bytes(26), ("198.51.100.1", 40001), ("192.0.2.2", 6001), T0)
    rec.close()
    assert WRITER.drain(timeout=10)
    # B's first packet arrived 1 ms (8 samples) after A's.
    return {
        "path": tmp_path / "c=t.pcap",
        "a": round_trip(a, 0) + [0] * 8,
        "b": [0] * 8 + round_trip(b, 0),
    }


@pytest.mark.parametrize("given", [["-A"], ["-B"], ["-A", "-B"]])
def test_single_file_pcap_is_split_into_its_two_directions(
    single_file: dict, tmp_path: Path, given: list[str]
) -> None:
    inputs = [arg for flag in given for arg in (flag, str(single_file["path"]))]
    out = tmp_path / "o.wav"
    assert main([*inputs, str(out)]) == 0
    channels, got = read_wav(out)
    assert channels == 1
    assert got == [c_half(x, y) for x, y in zip(single_file["a"], single_file["b"], strict=True)]
    assert main(["-s", *inputs, str(out)]) == 0
    channels, got = read_wav(out)
    assert channels == 2
    assert got[0::2] == single_file["a"] and got[1::2] == single_file["b"]


def test_single_file_pcap_with_delete_removes_it_once(
    single_file: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["-d", "-A", str(single_file["path"]), str(tmp_path / "o.wav")]) == 0
    assert not single_file["path"].exists()
    assert "can't delete" not in capsys.readouterr().err


def test_runs_through_a_symlink_named_extractaudio(tmp_path: Path, single_file: dict) -> None:
    link = tmp_path / "bin" / "extractaudio"
    link.parent.mkdir()
    link.symlink_to(REPO / "rtpproxy.py")
    out = tmp_path / "via-link.wav"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(link), "-A", str(single_file["path"]), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert read_wav(out)[0] == 1


def test_gaps_are_filled_with_silence_unless_n(tmp_path: Path) -> None:
    samples = tone(1000, 1600)
    pkts = [p for p in packets_for(samples, 0, 1) if p[0] not in (3, 4)]
    write_rec(tmp_path / "c=t.a.rtp", RecordFormat.ADHOC, pkts, BOB)
    expected = round_trip(samples, 0)
    expected[480:800] = [0] * 320
    out = tmp_path / "gap.wav"
    assert main([str(tmp_path / "c=t"), str(out)]) == 0
    assert read_wav(out)[1] == expected
    assert main(["-n", str(tmp_path / "c=t"), str(out)]) == 0
    assert read_wav(out)[1] == expected[:480] + expected[800:]


def test_reordered_and_duplicate_packets(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    samples = tone(700, 1600)
    pkts = packets_for(samples, 8, 1)
    pkts[2], pkts[3] = pkts[3], pkts[2]
    pkts.insert(5, pkts[5])
    write_rec(tmp_path / "c=t.a.rtp", RecordFormat.ADHOC, pkts, BOB)
    out = tmp_path / "r.wav"
    assert main([str(tmp_path / "c=t"), str(out)]) == 0
    assert read_wav(out)[1] == round_trip(samples, 8)
    assert "duplicates 1" in capsys.readouterr().out


def test_unsupported_and_ignored_payload_types(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    samples = tone(1000, 800)
    pkts = packets_for(samples, 0, 1)
    pkts.append((5, rtp(105, 5800, 1, 101, b"\x01\x0a\x00\xa0")))
    pkts.append((5, rtp(106, 5800, 1, 18, bytes(20))))
    write_rec(tmp_path / "c=t.a.rtp", RecordFormat.ADHOC, pkts, BOB)
    out = tmp_path / "u.wav"
    assert main([str(tmp_path / "c=t"), str(out)]) == 0
    assert read_wav(out)[1] == round_trip(samples, 0)
    stdout = capsys.readouterr().out
    assert "1 packets with unsupported payload type 18 skipped" in stdout
    assert "1 comfort noise / telephone-event packets ignored" in stdout


def test_scan_only(call: dict, capsys: pytest.CaptureFixture) -> None:
    assert main(["-S", str(call["base"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{call['base']}.a.rtp: 50", f"{call['base']}.o.rtp: 45"]


def test_ulaw_wav_output(call: dict) -> None:
    out = call["dir"] / "u.wav"
    assert main(["-D", "ulaw", str(call["base"]), str(out)]) == 0
    blob = out.read_bytes()
    assert blob[:4] == b"RIFF" and blob[8:12] == b"WAVE"
    assert struct.unpack("<HHIIHH", blob[20:36]) == (7, 1, 8000, 8000, 1, 8)
    data = blob[blob.index(b"data") + 8 :]
    mixed = [c_half(x, y) for x, y in zip(call["a"], [0] * 800 + call["b"], strict=True)]
    assert data == g711.ulaw_encode(struct.pack(f"<{len(mixed)}h", *mixed))


def test_unsupported_format_lists_names(call: dict, capsys: pytest.CaptureFixture) -> None:
    assert main(["-D", "gsm610", str(call["base"]), str(call["dir"] / "x.wav")]) == 1
    assert "pcm_16, ulaw, alaw" in capsys.readouterr().err
    assert main(["-F", "flac", str(call["base"]), str(call["dir"] / "x.wav")]) == 1


def test_exit_codes(call: dict, tmp_path: Path) -> None:
    assert main([]) == 1
    assert main([str(call["base"])]) == 1
    assert main([str(tmp_path / "missing"), str(tmp_path / "x.wav")]) == 1
    assert main([str(call["base"]), str(tmp_path / "no" / "dir" / "x.wav")]) == 2
    only_a = ["-A", f"{call['base']}.a.rtp", "-B", str(tmp_path / "nope.rtp")]
    assert main([*only_a, str(tmp_path / "x.wav")]) == 0
    assert main(["-e", *only_a, str(tmp_path / "x.wav")]) == 1


def test_links_and_delete(call: dict) -> None:
    out, link = call["dir"] / "o.wav", call["dir"] / "l.wav"
    assert main(["-d", str(call["base"]), str(out), str(link)]) == 0
    assert link.samefile(out)
    assert not Path(f"{call['base']}.a.rtp").exists()
    assert not Path(f"{call['base']}.o.rtp").exists()
