"""The kernel fast path against the real kernel: a daemon with --kernel-offload in a
private relay namespace between two phone subnets, real RTP both ways."""

from __future__ import annotations

import socket

import pytest

from kernel.kcall import make_call, start_relay

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_call_is_relayed_by_the_kernel_both_ways(rtpproxy, lab, family):
    proxy = start_relay(rtpproxy, lab, family=family)
    call = make_call(proxy, lab, family)
    call.latch()
    assert lab.elements() > 0
    call.a_to_b(50)
    call.b_to_a(40)
    # Q counts every packet; the analyzer, which sees what reaches the daemon's
    # sockets, saw only the first packet of each side.
    stats = call.query("npkts_ina", "npkts_ino", "nrelayed", "rtpa_nrcvd")
    assert stats == {"npkts_ina": 51, "npkts_ino": 41, "nrelayed": 92, "rtpa_nrcvd": 1}
    other = proxy.cmd(f"Qv {call.call_id} ttag;1 ftag;1 rtpa_nrcvd")
    assert other == "rtpa_nrcvd=1"
    assert proxy.cmd("G npkts_rcvd npkts_relayed") == "92 92"
    nat = [e for e in lab.conntrack(family) if f"dport={call.to_b[1]}" in e]
    assert nat, lab.conntrack(family)
    assert call.delete() == "0"
    # Once D has returned nothing is forwarded, and nothing is left in the kernel.
    call.send_a(3)
    call.send_b(3)
    assert call.b.recv_none(0.3) and call.a.recv_none(0.1)
    assert lab.elements() == 0
    assert proxy.cmd("G npkts_rcvd npkts_relayed nsess_destroyed") == "92 92 1"
    assert "RTP from caller 51, from callee 41, relayed 51/41" in proxy.stderr_text()
