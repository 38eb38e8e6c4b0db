"""Recordings on a full disk (a small tmpfs): a file that cannot hold even its header is
removed, and one the disk fills mid-call ends on its last whole record. Every file left
behind opens in extractaudio and, for pcap, in tshark."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import rtpproxy_command, short_tmpdir
from integration.media_util import kamailio_call, rtp
from integration.test_recording import parse_adhoc, parse_pcap, tshark_rtp, wait_for

pytestmark = pytest.mark.timeout(120)
PAGE = 4096
FILLER = "filler"


@pytest.fixture
def tiny_fs():
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = Path(short_tmpdir()) / "fs"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"can't mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(mnt.parent, ignore_errors=True)


def fill(mnt: Path, leave_pages: int) -> None:
    """Take all the space of `mnt` but `leave_pages` pages."""
    path = mnt / FILLER
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, b"\1" * PAGE) == PAGE:
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    size = path.stat().st_size
    os.truncate(path, max(0, size - leave_pages * PAGE))


def recordings(mnt: Path) -> list[Path]:
    return sorted(p for p in mnt.iterdir() if p.name != FILLER)


def extractaudio_scan(path: Path) -> int:
    """Packets extractaudio finds in `path` (its scan mode)."""
    done = subprocess.run(
        rtpproxy_command() + ["extractaudio", "-S", "-A", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().rsplit(":", 1)[1])


def record_call(rtpproxy, mnt: Path, pcap: bool, count: int, leave_pages: int, error: str):
    """Record a call of `count` packets on `mnt` filled up to `leave_pages` pages, then wait
    for the daemon's `error` log line and for it to finish with the file."""
    fill(mnt, leave_pages)
    flags = ["-r", str(mnt), "-R"] + (["-P"] if pcap else [])
    proxy = rtpproxy(*flags)
    call = kamailio_call(proxy)
    assert proxy.cmd(f"R {call.call_id} {call.ftag} {call.ttag}") == "0"
    for seq in range(count):
        packet = rtp(seq, seq * 160, 0x4242, bytes(172))
        assert call.a_to_b(packet)[0] == packet  # relaying goes on whatever the disk does
    assert call.delete() == "0"
    wait_for(lambda: error in proxy.stderr_text(), 5.0, what=f"the {error!r} line")
    time.sleep(0.3)
    return proxy, call


@pytest.mark.parametrize("pcap", [False, True], ids=["adhoc", "pcap"])
def test_no_room_even_for_the_header_leaves_no_file(rtpproxy, tiny_fs, pcap):
    proxy, _ = record_call(rtpproxy, tiny_fs, pcap, 40, 0, "file removed")
    assert recordings(tiny_fs) == []
    assert proxy.cmd("G nrec_errors") == "1"


@pytest.mark.parametrize("pcap", [False, True], ids=["adhoc", "pcap"])
def test_a_disk_full_mid_call_leaves_whole_records(rtpproxy, tiny_fs, pcap):
    proxy, call = record_call(rtpproxy, tiny_fs, pcap, 120, 2, "recording of this file stopped")
    files = recordings(tiny_fs)
    assert [p.name for p in files] == [f"{call.call_id}=ftag.o.rtp"]
    path = files[0]
    recs = (parse_pcap if pcap else parse_adhoc)(path)  # asserts whole records
    seqs = [int.from_bytes(r.data[2:4], "big") for r in recs]
    assert 0 < len(seqs) < 120 and seqs == list(range(len(seqs)))
    assert extractaudio_scan(path) == len(seqs)
    if pcap:
        frames = tshark_rtp(path, [call.port_b])
        assert [int(f[2]) for f in frames] == seqs
