"""Observability of a real daemon carrying real calls: a real Prometheus scrapes
--metrics (values checked against G and I, every dashboard query run through it),
scrapers that stall or hammer cost no packet and no reply, the --acct records match
the packets sent, and `rtpproxy top` is driven in a real terminal (tmux)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from helpers import REPO, free_tcp_port, rtpproxy_command, start_proxy
from integration.media_util import kamailio_call, rtp
from rtpp.stats import COUNTERS, Home

pytestmark = pytest.mark.timeout(120)

DASHBOARD = REPO / "packaging" / "grafana" / "rtpproxy-dashboard.json"
G_NAMES = [c.name for c in COUNTERS if c.home is not Home.SESSION]
NOT_MONOTONIC = {"pps_in", "rtpa_nlost"}


def http_get(url: str, timeout: float = 5.0, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric_name(stat: str) -> str:
    return f"rtpproxy_{stat}" if stat in NOT_MONOTONIC else f"rtpproxy_{stat}_total"


def g_values(proxy, names: list[str]) -> dict[str, float]:
    values = {}
    for i in range(0, len(names), 8):
        chunk = names[i : i + 8]
        reply = proxy.cmd("G " + " ".join(chunk)).split()
        values.update(zip(chunk, map(float, reply), strict=True))
    return values


def send_both_ways(call, count: int, start: int = 0, skip: tuple[int, ...] = ()) -> None:
    """`count` RTP packets each way (PCMU one way, PCMA back); seqs in `skip` are
    never sent (lost); every packet sent must arrive."""
    for seq in range(start, start + count):
        if seq in skip:
            continue
        out = rtp(seq, seq * 160, 0xA1, b"\x55" * 160)
        assert call.a_to_b(out)[0] == out
        back = rtp(seq, seq * 160, 0xB2, b"\xd5" * 80, pt=8)
        assert call.b_to_a(back)[0] == back


# ---------------------------------------------------------------- Prometheus


class Prometheus:
    def __init__(self, target: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="rtpp-prom")
        self.port = free_tcp_port()
        config = Path(self.dir, "prometheus.yml")
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: rtpproxy\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = open(Path(self.dir, "log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir}/data",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if http_get(self.base + "/-/ready", timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.close()
        pytest.fail("prometheus did not start: " + Path(self.dir, "log").read_text())

    def query(self, expr: str) -> list:
        url = self.base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http_get(url)
        reply = json.loads(body)
        assert status == 200 and reply["status"] == "success", (expr, body)
        return reply["data"]["result"]

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def wait_scraped_after(self, wall: float, timeout: float = 10.0) -> None:
        """Until a scrape that started after `wall` (time.time()) is stored."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query("timestamp(rtpproxy_active_sessions)")
            if result and float(result[0]["value"][1]) > wall:
                return
            time.sleep(0.2)
        pytest.fail(f"no scrape after {wall}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def carried():
    """A daemon carrying calls (one of them ended, one with losses), and a real
    Prometheus scraping its --metrics once a second."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (packaging/install-deps.sh check)")
    metrics_port = free_tcp_port()
    proxy = start_proxy("-l", "127.0.0.1", "--metrics", f"127.0.0.1:{metrics_port}")
    prom = None
    calls = []
    try:
        prom = Prometheus(f"127.0.0.1:{metrics_port}")
        for i in range(3):
            call = kamailio_call(proxy)
            calls.append(call)
            send_both_ways(call, 40 + 10 * i, skip=(7, 8) if i == 1 else ())
        ended = kamailio_call(proxy)
        send_both_ways(ended, 5)
        assert ended.delete() == "0"
        ended.close()
        assert proxy.cmd("Q nosuch@test a b").startswith("E")
        yield proxy, prom, metrics_port
    finally:
        for call in calls:
            call.close()
        if prom is not None:
            prom.close()
        proxy.cleanup()


def test_prometheus_sees_what_g_and_i_report(carried):
    proxy, prom, _ = carried
    prom.wait_scraped_after(time.time() - 0.5)
    info = dict(line.split(": ", 1) for line in proxy.cmd("I").splitlines())
    plain = [n for n in G_NAMES if not n.startswith("ncmds_") and n != "pps_in"]
    values = g_values(proxy, plain)
    # The command counters last, in one G: no command follows it before the scrape.
    cmds = g_values(proxy, [n for n in G_NAMES if n.startswith("ncmds_")])
    prom.wait_scraped_after(time.time())
    for name, value in values.items():
        assert prom.scalar(metric_name(name)) == pytest.approx(value, abs=1e-6), name
    assert values["npkts_rcvd"] > 0 and values["rtpa_nlost"] == 4
    assert values["nsess_destroyed"] == 1
    # That G was received before it answered, and counted as done after.
    assert prom.scalar("rtpproxy_ncmds_rcvd_total") == cmds["ncmds_rcvd"]
    assert prom.scalar("rtpproxy_ncmds_errs_total") == cmds["ncmds_errs"]
    assert prom.scalar("rtpproxy_ncmds_succd_total") == cmds["ncmds_succd"] + 1
    assert prom.scalar("rtpproxy_ncmds_repld_total") == cmds["ncmds_repld"] + 1
    assert prom.scalar("rtpproxy_active_sessions") == float(info["active sessions"])
    assert prom.scalar("rtpproxy_active_streams") == float(info["active streams"])
    assert prom.scalar("rtpproxy_npkts_rcvd_total") == float(info["packets received"])
    ok = prom.scalar('sum(rtpproxy_commands_total{result="ok"})')
    failed = prom.scalar('sum(rtpproxy_commands_total{result!="ok"})')
    assert ok == cmds["ncmds_succd"] + 1 and failed == cmds["ncmds_errs"]
    assert prom.scalar('rtpproxy_commands_total{verb="Q",result="E50"}') == 1
    assert prom.scalar('rtpproxy_port_pairs_in_use{address="127.0.0.1"}') == 6
    assert prom.scalar('sum(rtpproxy_streams_by_route{route="plain"})') == 6


def test_every_dashboard_query_works_against_the_real_metrics(carried):
    _, prom, _ = carried
    prom.wait_scraped_after(time.time())  # rate() needs two samples in its window
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 20
    for expr in exprs:
        concrete = expr.replace("$__rate_interval", "5s").replace("$instance", ".*")
        assert "$" not in concrete, expr
        result = prom.query(concrete)
        assert result, f"no data: {expr}"


def test_openmetrics_on_content_negotiation(carried):
    _, _, port = carried
    status, text = http_get(
        f"http://127.0.0.1:{port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert status == 200 and text.endswith("# EOF\n")
    status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and "# EOF" not in text and "rtpproxy_npkts_rcvd_total" in text


def test_sessions_endpoint_pages_sorts_and_refuses_bad_queries(carried):
    proxy, _, port = carried
    base = f"http://127.0.0.1:{port}/sessions"
    status, body = http_get(base + "?limit=2")
    page = json.loads(body)
    assert status == 200 and page["total"] == 3 and len(page["sessions"]) == 2
    rest = json.loads(http_get(base + "?limit=2&offset=2")[1])
    ids = [s["call_id"] for s in page["sessions"] + rest["sessions"]]
    assert len(set(ids)) == 3
    busiest = json.loads(http_get(base + "?sort=busiest")[1])["sessions"]
    assert [s["legs"][0]["rtp"]["packets_in"] for s in busiest] == [60, 48, 40]
    worst = json.loads(http_get(base + "?sort=worst&limit=1")[1])["sessions"][0]
    assert worst["legs"][0]["rtpa"]["lost"] == 2 and worst["legs"][1]["rtpa"]["lost"] == 2
    caller, callee = worst["legs"]
    assert caller["party"] == "caller" and caller["tag"] == "ftag;1" and callee["tag"] == "ttag;1"
    assert caller["latched"] and callee["latched"]
    assert caller["payload_types"] == [0] and callee["payload_types"] == [8]
    assert caller["rtp"]["packets_in"] == callee["rtp"]["packets_out"] == 48
    assert caller["rtp"]["bytes_in"] == 48 * 172 and callee["rtp"]["bytes_in"] == 48 * 92
    for query in ("limit=0", "limit=100000", "sort=nope", "offset=-1", "foo=1"):
        assert http_get(f"{base}?{query}")[0] == 400, query
    assert http_get(f"http://127.0.0.1:{port}/nothing")[0] == 404


# ---------------------------------------------------------------- scrapers cost nothing


def test_stalled_and_hammering_scrapers_cost_no_packet_and_no_reply(rtpproxy):
    port = free_tcp_port()
    proxy = rtpproxy("-l", "127.0.0.1", "--metrics", f"127.0.0.1:{port}")
    call = kamailio_call(proxy)
    stalled = []
    for _ in range(3):  # connect and never send
        stalled.append(socket.create_connection(("127.0.0.1", port)))
    reader = socket.socket()  # ask and never read
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    reader.connect(("127.0.0.1", port))
    reader.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    opened = time.monotonic()

    statuses: list[int] = []

    def hammer() -> None:
        for _ in range(1000):
            status, body = http_get(f"http://127.0.0.1:{port}/metrics")
            statuses.append(status if "rtpproxy_npkts_relayed_total" in body else -1)

    thread = threading.Thread(target=hammer)
    thread.start()
    sent = replies = seq = 0
    while thread.is_alive() or seq < 200:
        out = rtp(seq, seq * 160, 0x77, b"\x55" * 160)
        assert call.a_to_b(out)[0] == out, seq
        sent += 1
        if seq % 10 == 0:
            assert proxy.cmd("G npkts_relayed", timeout=2.0, retries=1).isdigit()
            replies += 1
        seq += 1
    thread.join()
    assert statuses == [200] * 1000
    assert int(proxy.cmd("G npkts_relayed")) == sent
    assert proxy.cmd(f"Q {call.call_id} ftag;1 ttag;1").split()[3] == str(sent)  # nrelayed
    # The stalled connections were timed out by the daemon, not by us.
    for sock in stalled:
        sock.settimeout(max(0.1, 10.0 - (time.monotonic() - opened)))
        assert sock.recv(1) == b""
        sock.close()
    reader.settimeout(10.0)
    data = b""
    while chunk := reader.recv(65536):
        data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    reader.close()
    call.close()


def test_health_is_503_with_a_reason_while_draining(rtpproxy):
    port = free_tcp_port()
    proxy = rtpproxy("-l", "127.0.0.1", "--metrics", f"127.0.0.1:{port}")
    assert http_get(f"http://127.0.0.1:{port}/health") == (200, "OK\n")
    call = kamailio_call(proxy)
    os.kill(proxy.pid, signal.SIGHUP)
    deadline = time.monotonic() + 5
    while http_get(f"http://127.0.0.1:{port}/health")[0] != 503:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    status, text = http_get(f"http://127.0.0.1:{port}/health")
    assert text == "draining: new sessions are refused (E99)\n"
    assert call.delete() == "0"
    call.close()


def test_metrics_flag_errors_stop_start_up(rtpproxy):
    proxy = rtpproxy("--metrics", "127.0.0.1", wait=False)
    assert proxy.proc.wait(timeout=10) == 1
    assert "metrics address must be HOST:PORT" in proxy.stderr_text()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    taken = busy.getsockname()[1]
    proxy = rtpproxy("--metrics", f"127.0.0.1:{taken}", wait=False)
    assert proxy.proc.wait(timeout=10) == 1
    assert f"can't serve metrics on 127.0.0.1:{taken}" in proxy.stderr_text()
    busy.close()
    proxy = rtpproxy("--acct", "/nonexistent/dir/acct.json", wait=False)
    assert proxy.proc.wait(timeout=10) == 1
    assert "start-up failed" in proxy.stderr_text() and "/nonexistent/dir" in proxy.stderr_text()


# ---------------------------------------------------------------- accounting


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_records(path: Path, count: int, timeout: float = 6.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(records := read_records(path)) < count:
        assert time.monotonic() < deadline, f"{len(records)} of {count} records in {path}"
        time.sleep(0.05)
    return records


def test_acct_records_match_the_packets_sent(rtpproxy, tmp_path):
    acct = tmp_path / "acct.json"
    proxy = rtpproxy("-l", "127.0.0.1", "-T", "2", "--acct", str(acct))
    began = time.monotonic()
    deleted = kamailio_call(proxy)
    send_both_ways(deleted, 30, skip=(10, 11, 12))
    dup = rtp(5, 5 * 160, 0xA1, b"\x55" * 160)
    assert deleted.a_to_b(dup)[0] == dup  # a duplicate is relayed and counted
    rcvd = int(proxy.cmd("G npkts_rcvd"))
    rtcp = b"\x81\xc9\x00\x01" + b"\x00" * 4
    deleted.a.send(rtcp, (deleted.addr, deleted.port_b + 1))
    deadline = time.monotonic() + 2
    while int(proxy.cmd("G npkts_rcvd")) == rcvd:
        assert time.monotonic() < deadline, "the RTCP packet was not received"
        time.sleep(0.01)
    idle = kamailio_call(proxy)  # will time out
    assert deleted.delete() == "0"
    (record,) = wait_records(acct, 1)
    assert record["call_id"] == deleted.call_id and record["ended"] == "delete"
    assert (record["from_tag"], record["to_tag"]) == ("ftag;1", "ttag;1")
    assert 0 < record["duration_s"] <= time.monotonic() - began
    caller, callee = record["legs"]
    assert caller["remote"] == f"127.0.0.1:{deleted.a.port}"
    assert callee["remote"] == f"127.0.0.1:{deleted.b.port}"
    assert caller["local"] == f"127.0.0.1:{deleted.port_b}"
    assert callee["local"] == f"127.0.0.1:{deleted.port_a}"
    assert caller["rtp"] == {
        "packets_in": 28,
        "bytes_in": 28 * 172,
        "packets_out": 27,
        "bytes_out": 27 * 92,
        "relayed": 28,
        "dropped": 0,
        "ignored": 0,
    }
    assert caller["rtcp"]["packets_in"] == 1 and caller["rtcp"]["bytes_in"] == len(rtcp)
    assert caller["payload_types"] == [0] and callee["payload_types"] == [8]
    assert caller["rtpa"]["sent"] == 30 and caller["rtpa"]["received"] == 27
    assert caller["rtpa"]["lost"] == 3 and caller["rtpa"]["duplicates"] == 1
    assert callee["rtpa"]["lost"] == 3 and callee["rtpa"]["duplicates"] == 0
    assert caller["rtpa"]["jitter_max"] >= caller["rtpa"]["jitter_last"] >= 0

    # Rotation: the file is renamed, the daemon told (through a one-file
    # executable's bootloader, which passes the signal on), the next record lands
    # in a new file.
    os.rename(acct, tmp_path / "acct.json.1")
    proxy.proc.send_signal(signal.SIGWINCH)
    (timed_out,) = wait_records(acct, 1)
    assert timed_out["call_id"] == idle.call_id and timed_out["ended"] == "timeout"
    live = kamailio_call(proxy)
    send_both_ways(live, 3)
    proxy.stop()
    records = read_records(acct)
    assert [(r["call_id"], r["ended"]) for r in records[1:]] == [(live.call_id, "shutdown")]
    assert records[1]["legs"][0]["rtp"]["packets_in"] == 3
    assert len(read_records(tmp_path / "acct.json.1")) == 1
    for call in (deleted, idle, live):
        call.close()


def test_a_full_disk_costs_records_never_media(rtpproxy):
    port = free_tcp_port()
    proxy = rtpproxy("-l", "127.0.0.1", "--acct", "/dev/full", "--metrics", f"127.0.0.1:{port}")
    for _ in range(3):
        call = kamailio_call(proxy)
        send_both_ways(call, 5)
        assert call.delete() == "0"
        call.close()
    deadline = time.monotonic() + 5
    while "rtpproxy_acct_records_lost_total 3.0" not in (
        text := http_get(f"http://127.0.0.1:{port}/metrics")[1]
    ):
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    assert "rtpproxy_acct_records_written_total 0.0" in text
    assert proxy.stderr_text().count("accounting records are being lost") == 1
    assert int(proxy.cmd("G npkts_relayed")) == 30


# ---------------------------------------------------------------- rtpproxy top


def test_top_in_a_real_terminal(rtpproxy, tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    port = free_tcp_port()
    proxy = rtpproxy("-l", "127.0.0.1", "--metrics", f"127.0.0.1:{port}")
    quiet, busy = kamailio_call(proxy), kamailio_call(proxy)
    stop = threading.Event()

    def talk() -> None:
        seq = 0
        while not stop.is_set():
            out = rtp(seq, seq * 160, 0x99, b"\x55" * 160)
            busy.a_to_b(out)
            seq += 1
            time.sleep(0.02)

    talker = threading.Thread(target=talk)
    talker.start()
    sock = str(tmp_path / "tmux.sock")
    command = shlex.join([*rtpproxy_command(), "top", "-i", "0.5", f"127.0.0.1:{port}"])
    tmux = ["tmux", "-S", sock, "-f", "/dev/null"]
    env = dict(os.environ, TERM="screen")

    def screen() -> str:
        return subprocess.run(
            [*tmux, "capture-pane", "-p", "-t", "top"], capture_output=True, text=True, check=True
        ).stdout

    def wait_for(text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in (shown := screen()):
            assert time.monotonic() < deadline, f"{text!r} not on screen:\n{shown}"
            time.sleep(0.1)
        return shown

    try:
        subprocess.run(
            [*tmux, "new-session", "-d", "-s", "top", "-x", "150", "-y", "20", command],
            env=env,
            check=True,
        )
        wait_for("2 sessions - OK - busiest first")
        wait_for(busy.call_id)
        deadline = time.monotonic() + 10
        while True:  # the rate shows from the second refresh on
            rows = [line for line in screen().splitlines() if busy.call_id[:20] in line]
            cells = rows[0].split() if rows else []
            if len(cells) > 5 and cells[4].isdigit() and int(cells[4]) > 10:
                break
            assert time.monotonic() < deadline, screen()
            time.sleep(0.2)
        lines = screen().splitlines()
        assert lines[2].split()[:4] == ["CALL-ID", "AGE", "CALLER", "CALLEE"]
        assert busy.call_id[:20] in lines[3]  # busiest first
        assert quiet.call_id[:20] in lines[4]
        assert f"127.0.0.1:{busy.a.port}*" in lines[3]
        subprocess.run([*tmux, "send-keys", "-t", "top", "w"], check=True)
        wait_for("worst first")
        subprocess.run([*tmux, "send-keys", "-t", "top", "q"], check=True)
        deadline = time.monotonic() + 5
        while (
            subprocess.run([*tmux, "has-session", "-t", "top"], capture_output=True).returncode == 0
        ):
            assert time.monotonic() < deadline, "top did not quit on q"
            time.sleep(0.1)
    finally:
        stop.set()
        talker.join()
        subprocess.run([*tmux, "kill-server"], capture_output=True)
        quiet.close()
        busy.close()


def test_top_batch_mode_and_errors(rtpproxy):
    port = free_tcp_port()
    proxy = rtpproxy("-l", "127.0.0.1", "--metrics", f"127.0.0.1:{port}")
    call = kamailio_call(proxy)
    out = subprocess.run(
        [*rtpproxy_command(), "top", "-b", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and call.call_id[:20] in out.stdout
    assert "1 sessions - OK - busiest first" in out.stdout.splitlines()[0]
    closed = free_tcp_port()
    out = subprocess.run(
        [*rtpproxy_command(), "top", "-b", f"127.0.0.1:{closed}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1 and "error:" in out.stdout
    out = subprocess.run(
        [*rtpproxy_command(), "top", "-s", "loudest"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 1 and "usage: rtpproxy top" in out.stderr
    call.close()


# ---------------------------------------------------------------- the kernel route


def test_kernel_route_in_metrics_and_acct(rtpproxy, lab, tmp_path):
    """Streams the kernel forwards are counted under route="kernel", their packets in
    the exported G counters and, with their payload bytes, in the --acct record."""
    from kernel.kcall import make_call, start_relay

    acct = tmp_path / "acct.json"
    proxy = start_relay(rtpproxy, lab, "--metrics", "127.0.0.1:9950", "--acct", str(acct))

    def scrape() -> dict[str, float]:
        code = (
            "import urllib.request;"
            "print(urllib.request.urlopen('http://127.0.0.1:9950/metrics').read().decode())"
        )
        text = subprocess.run(
            ["ip", "netns", "exec", lab.relay, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("rtpproxy_")
        }

    call = make_call(proxy, lab)
    call.latch()
    call.a_to_b(30)
    call.b_to_a(20)
    relayed = int(proxy.cmd("G npkts_relayed"))
    metrics = scrape()
    assert metrics['rtpproxy_streams_by_route{route="kernel"}'] == 2
    assert metrics["rtpproxy_npkts_relayed_total"] == relayed == 52
    assert call.delete() == "0"
    (record,) = wait_records(acct, 1)
    caller, callee = record["legs"]
    assert caller["rtp"]["packets_in"] == 31 and callee["rtp"]["packets_in"] == 21
    assert caller["rtp"]["bytes_in"] == 31 * 172 and callee["rtp"]["bytes_in"] == 21 * 172
    assert caller["rtp"]["bytes_out"] == 21 * 172


# ---------------------------------------------------------------- live handoff


def test_metrics_and_acct_go_on_through_a_live_handoff(rtpproxy, tmp_path):
    from integration.test_handoff import hand_over

    port = free_tcp_port()
    acct = tmp_path / "acct.json"
    proxy = rtpproxy("-l", "127.0.0.1", "--metrics", f"127.0.0.1:{port}", "--acct", str(acct))
    call = kamailio_call(proxy)
    send_both_ways(call, 10)
    stop = threading.Event()
    statuses: list[int] = []

    def scrape_on() -> None:  # a scraper polling through the handoff
        while not stop.is_set():
            try:
                statuses.append(http_get(f"http://127.0.0.1:{port}/health", timeout=2)[0])
            except OSError:
                statuses.append(-1)
            time.sleep(0.02)

    scraper = threading.Thread(target=scrape_on)
    scraper.start()
    try:
        old = proxy.pid
        new = hand_over(proxy)
        assert new != old
        send_both_ways(call, 5, start=10)
    finally:
        stop.set()
        scraper.join()
    assert statuses.count(200) >= len(statuses) - 2  # at most a connection the old one reset
    page = json.loads(http_get(f"http://127.0.0.1:{port}/sessions")[1])
    assert page["total"] == 1
    assert page["sessions"][0]["legs"][0]["rtp"]["packets_in"] == 15  # carried over
    text = http_get(f"http://127.0.0.1:{port}/metrics")[1]
    assert 'rtpproxy_commands_total{result="ok",verb="U"}' not in text  # the new process's
    assert call.delete() == "0"
    (record,) = wait_records(acct, 1)  # written by the successor
    assert record["legs"][0]["rtp"]["packets_in"] == 15
    assert record["legs"][0]["rtp"]["bytes_in"] == 15 * 172
    call.close()
