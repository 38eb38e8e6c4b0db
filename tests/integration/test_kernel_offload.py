"""--kernel-offload in this suite too, so that it also runs against the one-file binary
(RTPP_BIN): the bundled libnftables wrapper and pyroute2 drive the real kernel. The
full set of kernel cases is in tests/kernel."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers import rtpproxy_command
from integration.test_handoff import hand_over
from kernel.kcall import make_call, start_relay
from kernel.kstream import Streams

pytestmark = pytest.mark.timeout(60)


def test_kernel_relays_a_call_and_d_stops_it(rtpproxy, lab):
    proxy = start_relay(rtpproxy, lab)
    call = make_call(proxy, lab)
    call.latch()
    call.a_to_b(20)
    call.b_to_a(20)
    assert call.query("npkts_ina", "npkts_ino", "rtpa_nrcvd") == {
        "npkts_ina": 21,
        "npkts_ino": 21,
        "rtpa_nrcvd": 1,
    }
    assert "kernel offload on" in proxy.stderr_text()
    assert call.delete() == "0"
    call.send_a(2)
    assert call.b.recv_none(0.3)
    assert lab.elements() == 0
    proxy.stop()
    assert not lab.instance_tables()


def test_kernel_route_carries_over_three_live_handoffs(rtpproxy, lab):
    """The successor takes the table over: the kernel forwards throughout, nothing is
    lost or doubled, the counters go on, and the pipe stays in the kernel."""
    proxy = start_relay(rtpproxy, lab)
    call = make_call(proxy, lab)
    call.latch()
    tables = lab.instance_tables()
    first_a, first_b = call.seq_a, call.seq_b
    streams = Streams(call)
    streams.start()
    try:
        for _ in range(3):
            time.sleep(0.3)
            hand_over(proxy)
            assert lab.instance_tables() == tables
        time.sleep(0.3)
    finally:
        streams.stop()
    streams.received_in_full(first_a, first_b)
    sent_a, sent_b = streams.sent["a"] + 1, streams.sent["b"] + 1
    assert call.query("npkts_ina", "npkts_ino", "rtpa_nrcvd") == {
        "npkts_ina": sent_a,
        "npkts_ino": sent_b,
        "rtpa_nrcvd": 1,  # no packet reached a socket: the kernel relayed them all
    }
    assert proxy.cmd("G npkts_rcvd npkts_relayed") == f"{sent_a + sent_b} {sent_a + sent_b}"
    assert proxy.stderr_text().count("live handoff done") == 3
    assert proxy.stderr_text().count("1 of 1 handed-over bindings kept") == 3
    call.a_to_b(5)
    assert call.query("rtpa_nrcvd") == {"rtpa_nrcvd": 1}
    assert call.delete() == "0"
    assert lab.elements() == 0
    assert not [e for e in lab.conntrack() if f"dport={call.to_b[1]}" in e]
    call.send_a(2)
    assert call.b.recv_none(0.3)
    proxy.stop()
    assert not lab.instance_tables()


CAP_NET_ADMIN = 1 << 12


def caps(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        line.split(":")[0]: int(line.split()[1], 16)
        for line in status.splitlines()
        if line.startswith("Cap")
    }


def test_an_unprivileged_daemon_hands_its_kernel_route_over(rtpproxy, lab):
    """-u nobody: CAP_NET_ADMIN passes to the successor (ambient), which keeps it."""
    program = Path(rtpproxy_command()[0]).resolve()
    if not all(p.stat().st_mode & 0o001 for p in program.parents):
        pytest.skip(f"user nobody cannot run {program} (a directory above it is private)")
    proxy = start_relay(rtpproxy, lab, "-u", "nobody")
    call = make_call(proxy, lab)
    call.latch()
    call.a_to_b(10)
    for _ in range(2):
        pid = hand_over(proxy)
        assert "Uid:\t65534" in Path(f"/proc/{pid}/status").read_text()
        got = caps(pid)
        assert got["CapEff"] == got["CapPrm"] == CAP_NET_ADMIN, got
        call.a_to_b(10)
        call.b_to_a(10)
    assert call.query("npkts_ina", "npkts_ino", "rtpa_nrcvd") == {
        "npkts_ina": 31,
        "npkts_ino": 21,
        "rtpa_nrcvd": 1,
    }
    assert call.delete() == "0"
    assert lab.elements() == 0
    proxy.stop()
    assert not lab.instance_tables()
