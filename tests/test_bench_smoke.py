"""Smoke run of the benchmark load generator (bench/loadgen.c): 10 calls, 2 s.

Functional only (sessions set up, media relayed both ways, calls deleted): no
timing assertion.  Runs against bench/bare_relay.py and against rtpproxy.py; the
latter is skipped with the reason when the daemon cannot relay yet (set
RTPP_BENCH_SMOKE_STRICT=1 to turn that skip into a failure).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
CALLS = 10
DURATION_S = 2.0
RATE = 50  # packets per second per direction


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _media_range() -> tuple[int, int]:
    # 10000-19999 is outside the ranges the integration tests hand out
    low = 10000 + (os.getpid() % 40) * 250
    return low, low + 199


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build bench/loadgen.c")
    out = tmp_path_factory.mktemp("loadgen") / "loadgen"
    proc = subprocess.run(
        [cc, "-O2", "-Wall", "-o", str(out), str(BENCH / "loadgen.c")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return out


class Relay:
    def __init__(self, cmd: list[str], ctl_port: int, log: Path) -> None:
        self.ctl_port = ctl_port
        self.log = log
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT
            )

    def ready(self, timeout: float = 15.0) -> str | None:
        """None once the control socket answers V, else why not."""
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            s.connect(("127.0.0.1", self.ctl_port))
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return f"exited with status {self.proc.returncode}: {self.output()}"
                try:
                    s.send(b"smoke_1 V")
                    if s.recv(256).split()[1:2] == [b"20040107"]:
                        return None
                except OSError:
                    time.sleep(0.05)
        return f"no reply to V within {timeout:.0f} s: {self.output()}"

    def output(self) -> str:
        text = self.log.read_bytes()[-400:].decode(errors="replace")
        return " ".join(text.split()) or "(no output)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_loadgen(loadgen: Path, ctl_port: int) -> dict:
    proc = subprocess.run(
        [
            str(loadgen),
            "--ctl",
            f"127.0.0.1:{ctl_port}",
            "--calls",
            str(CALLS),
            "--duration",
            str(DURATION_S),
            "--warmup",
            "0.5",
            "--drain",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"no RESULT line (rc={proc.returncode}): {proc.stdout} {proc.stderr}"
    result = json.loads(lines[-1][len("RESULT ") :])
    if "error" not in result:
        # the driver samples the relay's CPU on these two markers
        marks = [ln.split()[0] for ln in proc.stdout.splitlines()[:2]]
        assert marks == ["MEASURE_START", "MEASURE_END"], proc.stdout
    return result


def check_relayed(r: dict) -> None:
    expected = CALLS * 2 * RATE * DURATION_S
    assert "error" not in r, r
    assert r["tx"] >= expected * 0.8, r
    assert r["rx"] > 0, r
    assert r["rx"] <= r["tx"], r
    assert r["loss_pct"] <= 5.0, r  # functional: packets go both ways through the relay
    assert r["rx_bad"] == 0, r
    assert r["ctl_errors"] == 0 and r["d_failed"] == 0, r
    assert r["lat_p50_us"] > 0 and r["lat_max_us"] >= r["lat_p50_us"], r


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[list[Relay]]:
    started: list[Relay] = []
    yield started
    for relay in started:
        relay.stop()


def test_loadgen_against_bare_relay(loadgen: Path, tmp_path: Path, relays: list[Relay]) -> None:
    port = _free_udp_port()
    low, high = _media_range()
    cmd = [sys.executable, str(BENCH / "bare_relay.py"), "--ctl", f"127.0.0.1:{port}"]
    cmd += ["--port-min", str(low), "--port-max", str(high)]
    relay = Relay(cmd, port, tmp_path / "bare.log")
    relays.append(relay)
    assert relay.ready() is None, relay.output()
    r = run_loadgen(loadgen, port)
    check_relayed(r)
    assert r["loss_pct"] == 0.0 or r["lost"] <= 5, r


def test_loadgen_against_rtpproxy(loadgen: Path, tmp_path: Path, relays: list[Relay]) -> None:
    strict = os.environ.get("RTPP_BENCH_SMOKE_STRICT") == "1"

    def not_yet(reason: str) -> None:
        if strict:
            pytest.fail(reason)
        pytest.skip(f"daemon cannot relay yet: {reason}")

    port = _free_udp_port()
    low, high = _media_range()
    cmd = [sys.executable, str(REPO / "rtpproxy.py"), "-f", "-F"]
    cmd += ["-s", f"udp:127.0.0.1:{port}", "-l", "127.0.0.1"]
    cmd += ["-m", str(low), "-M", str(high), "-T", "60", "-d", "ERR"]
    relay = Relay(cmd, port, tmp_path / "rtpproxy.log")
    relays.append(relay)
    why = relay.ready()
    if why:
        not_yet(f"control socket: {why}")
    r = run_loadgen(loadgen, port)
    if "error" in r:
        not_yet(f"session set-up: {r['error']}")
    if r["rx"] == 0:
        not_yet("sessions set up but no RTP was relayed")
    check_relayed(r)


def test_driver_writes_report(loadgen: Path, tmp_path: Path) -> None:
    """One tiny point against the bare relay: the driver's table and JSON come out."""
    results, js = tmp_path / "RESULTS.md", tmp_path / "results.json"
    cmd = [sys.executable, str(BENCH / "driver.py"), "--targets", "bare", "--ladder", "10"]
    cmd += ["--fixed-n", "10", "--cpu-n", "10", "--duration", "1", "--warmup", "0.3"]
    cmd += ["--drain", "0.3", "--cpu-rounds", "2"]
    cmd += ["--retries", "0", "--loadgen", str(loadgen), "--python", sys.executable]
    cmd += ["--results", str(results), "--json", str(js)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    text = results.read_text()
    assert "## Summary" in text and "| bare |" in text and "## Commands" in text
    runs = json.loads(js.read_text())  # the point, then a second CPU round
    assert len(runs) == 2
    for run in runs:
        assert run["target"] == "bare" and run["calls"] == 10
        assert "error" not in run["result"], run
        assert run["result"]["rx"] > 0
    assert re.search(r"every round: bare \d+\.\d\d, \d+\.\d\d\.", text)
