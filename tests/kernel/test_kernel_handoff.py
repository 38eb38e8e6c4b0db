"""The kernel route across a live handoff (SIGUSR2), against the real kernel: the
successor takes the nftables table over; a failed handoff leaves it as it was. The
three-handoff and the unprivileged cases are in tests/integration/test_kernel_offload.py
(they run against the one-file binary too)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers import short_tmpdir
from integration.test_handoff import (
    PY,
    copy_of_executable,
    failed_hand_over,
    replace_file,
    serving_pid,
)
from kernel.kcall import make_call, start_relay
from kernel.kstream import Streams

pytestmark = pytest.mark.timeout(60)


def test_a_failed_handoff_leaves_the_kernel_route_untouched(rtpproxy, lab):
    """A successor that exits before it is ready: the old process forwards on through
    its table, nothing lost, its counters exact."""
    tmp = Path(short_tmpdir())
    command, path = copy_of_executable(tmp)
    proxy = start_relay(rtpproxy, lab, command=command)
    call = make_call(proxy, lab)
    call.latch()
    tables = lab.instance_tables()
    replace_file(path, f"#!{PY}\nimport time\ntime.sleep(0.3)\nraise SystemExit(0)\n".encode())
    first_a, first_b = call.seq_a, call.seq_b
    streams = Streams(call)
    streams.start()
    try:
        old = failed_hand_over(proxy)
        time.sleep(0.3)
    finally:
        streams.stop()
    streams.received_in_full(first_a, first_b)
    assert serving_pid(proxy) == old and proxy.alive()
    assert lab.instance_tables() == tables
    sent_a, sent_b = streams.sent["a"] + 1, streams.sent["b"] + 1
    assert call.query("npkts_ina", "npkts_ino", "rtpa_nrcvd") == {
        "npkts_ina": sent_a,
        "npkts_ino": sent_b,
        "rtpa_nrcvd": 1,
    }
    assert call.delete() == "0"
    assert lab.elements() == 0
    proxy.stop()
    assert not lab.instance_tables()
