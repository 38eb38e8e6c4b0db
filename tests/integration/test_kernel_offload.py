"""--kernel-offload in this suite too, so that it also runs against the one-file binary
(RTPP_BIN): the bundled libnftables wrapper and pyroute2 drive the real kernel. The
full set of kernel cases is in tests/kernel."""

from __future__ import annotations

import pytest

from kernel.kcall import make_call, start_relay

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
