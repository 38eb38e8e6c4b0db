"""What the media plane's parts do for a live handoff: a recorder goes on in the same
file from another writer, a player pauses and plays on without a gap."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import gevent
import pytest

from rtpp.media.playback.player import Player, PromptSchedule
from rtpp.media.recording.record import FileWriter, RecordCounters, Recorder, RecordFormat


@pytest.mark.parametrize("fmt", [RecordFormat.ADHOC, RecordFormat.PCAP])
def test_a_recorder_goes_on_in_the_same_file_after_adoption(tmp_path, fmt):
    old_writer, new_writer = FileWriter(), FileWriter()
    rec = Recorder("c=t.o.rtp", str(tmp_path), fmt=fmt, writer=old_writer)
    for seq in range(30):
        rec.write(packet(seq), ("127.0.0.1", 4000), ("127.0.0.1", 5000), time.time())
    rec.flush()
    assert old_writer.drain(5)
    doc, fd = rec.handoff_state()
    assert doc["size"] == os.path.getsize(tmp_path / "c=t.o.rtp")
    # The next process holds its own descriptor of the same open file.
    adopted = Recorder.adopt(doc, os.dup(fd), RecordCounters(), new_writer)
    old_writer.stop(5)
    os.close(fd)  # the old process exits
    for seq in range(30, 50):
        adopted.write(packet(seq), ("127.0.0.1", 4000), ("127.0.0.1", 5000), time.time())
    adopted.close()
    assert new_writer.stop(5)
    assert recorded_seqs(tmp_path / "c=t.o.rtp", fmt) == list(range(50))


def packet(seq: int) -> bytes:
    return bytes((0x80, 0)) + seq.to_bytes(2, "big") + bytes(8) + b"\xd5" * 160


def test_a_paused_player_plays_on_from_where_it_was():
    sent: list[bytes] = []
    schedule = PromptSchedule(b"\xd5" * 8000, 0, ptime_ms=10, count=1)
    player = Player(schedule, sent.append)
    player.start()
    gevent.sleep(0.1)
    player.pause()
    paused_at = len(sent)
    gevent.sleep(0.1)
    assert len(sent) == paused_at > 3  # nothing while paused
    player.resume()
    gevent.sleep(0.05)
    assert len(sent) > paused_at + 5  # what fell due meanwhile went out at once
    player.finished.wait(2)
    seqs = [int.from_bytes(p[2:4], "big") for p in sent]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(100)]
    assert player.completed


def recorded_seqs(path: Path, fmt: RecordFormat) -> list[int]:
    blob = path.read_bytes()
    seqs = []
    if fmt is RecordFormat.PCAP:
        at = 24
        while at < len(blob):
            (incl,) = struct.unpack_from("=I", blob, at + 8)
            frame = blob[at + 16 : at + 16 + incl]
            assert len(frame) == incl
            seqs.append(int.from_bytes(frame[14 + 20 + 8 + 2 : 14 + 20 + 8 + 4], "big"))
            at += 16 + incl
    else:
        at = 0
        while at < len(blob):
            (plen,) = struct.unpack_from("=H", blob, at + 28)
            seqs.append(int.from_bytes(blob[at + 30 + 2 : at + 30 + 4], "big"))
            at += 30 + plen
    assert at == len(blob)
    return seqs
