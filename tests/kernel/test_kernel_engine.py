"""rtpp.media.kernel on its own against the real kernel: a driver process in the relay
namespace of a netns_lab, real UDP between the phone namespaces."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from netns_lab import Lab

pytestmark = pytest.mark.timeout(60)

DRIVER = Path(__file__).with_name("engine_driver.py")
LOW, HIGH = 30000, 30099


class Engine:
    def __init__(self, lab: Lab, table: str = "rtpproxy_test") -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.relay, sys.executable, str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.table = table

    def __call__(self, op: str, **kw) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        assert "error" not in reply, reply
        return reply

    def open(self, lab: Lab, low: int = LOW, high: int = HIGH, adopt: bool = False) -> dict:
        hosts = [lab.v4("a", 1), lab.v4("b", 1), lab.v6("a", 1), lab.v6("b", 1)]
        return self("open", table=self.table, low=low, high=high, hosts=hosts, adopt=adopt)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=10)


@pytest.fixture
def engines():
    made: list[Engine] = []
    yield made
    for engine in made:
        if engine.proc.poll() is None:
            engine.proc.kill()
            engine.proc.wait()


def start(lab: Lab, engines: list, **kw) -> Engine:
    engine = Engine(lab, **kw)
    engines.append(engine)
    return engine


def legs(lab: Lab, a, b, family=socket.AF_INET, port_a=LOW, port_b=LOW + 2) -> tuple:
    """Leg a: A's address and the relay's port facing A; leg b the same for B."""
    return (
        [list(a.addr), [lab.addr(family, "a", 1), port_a]],
        [list(b.addr), [lab.addr(family, "b", 1), port_b]],
    )


def relayed(lab: Lab, src, dst, relay_port: int, side: str, family=socket.AF_INET, n=1):
    """Send n packets from src to the relay's port on its side; what dst got (and from)."""
    host = lab.addr(family, side, 1)
    for i in range(n):
        src.send(b"%d" % i, (host, relay_port))
    got = []
    for _ in range(n):
        try:
            data, frm = dst.recv(timeout=0.5)
        except TimeoutError:
            break
        got.append((data, frm[:2]))
    return got


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_bind_forwards_and_counts_both_ways_and_unbind_stops(lab, engines, family):
    engine = start(lab, engines)
    assert engine.open(lab)["ok"]
    a, b = lab.phone("a", family), lab.phone("b", family)
    # A's packet before the binding: an entry without NAT, which the commit must flush.
    a.send(b"early", (lab.addr(family, "a", 1), LOW))
    leg_a, leg_b = legs(lab, a, b, family)
    assert engine("bind", key="k", a=leg_a, b=leg_b)["ok"]
    assert engine("commit")["bound"] == ["k"]
    got = relayed(lab, a, b, LOW, "a", family, n=5)
    assert got == [(b"%d" % i, (lab.addr(family, "b", 1), LOW + 2)) for i in range(5)]
    got = relayed(lab, b, a, LOW + 2, "b", family, n=3)
    assert got == [(b"%d" % i, (lab.addr(family, "a", 1), LOW)) for i in range(3)]
    counts = engine("read")["counts"]["k"]
    assert counts[0] == 5 and counts[2] == 3 and counts[1] > 5 * 28 and counts[3] > 3 * 28
    assert engine("read")["counts"] == {}  # deltas: nothing new
    a.send(b"x", (lab.addr(family, "a", 1), LOW))
    b.recv(timeout=1)
    engine("unbind", key="k")
    assert engine("commit")["bound"] == []
    assert engine("read")["counts"]["k"][0] == 1  # the last figures, once
    assert engine("elements")["n"] == 0
    assert not [e for e in lab.conntrack(family) if f"dport={LOW}" in e]
    assert relayed(lab, a, b, LOW, "a", family) == []
    engine("close")
    assert not lab.instance_tables()


def bound_pair(lab, engine) -> tuple:
    """Two phones whose pipe `engine` (open) has bound as "k" and forwards: (a, b)."""
    a, b = lab.phone("a"), lab.phone("b")
    leg_a, leg_b = legs(lab, a, b)
    engine("bind", key="k", a=leg_a, b=leg_b)
    engine("commit")
    assert len(relayed(lab, a, b, LOW, "a")) == 1
    return a, b


def test_a_moved_binding_forwards_the_new_source_only(lab, engines):
    engine = start(lab, engines)
    assert engine.open(lab)["ok"]
    a, b = bound_pair(lab, engine)
    moved = lab.phone("a")
    leg_a, leg_b = legs(lab, moved, b)
    engine("bind", key="k", a=leg_a, b=leg_b)
    engine("commit")
    assert relayed(lab, a, b, LOW, "a") == []
    assert len(relayed(lab, moved, b, LOW, "a", n=2)) == 2
    assert relayed(lab, b, moved, LOW + 2, "b")[0][1] == (lab.v4("a", 1), LOW)
    assert engine("read")["counts"]["k"][0] == 3


def test_refuses_pairs_the_kernel_cannot_forward(lab, engines):
    engine = start(lab, engines)
    assert engine.open(lab)["ok"]
    a, b = lab.phone("a"), lab.phone("b")
    b6 = lab.phone("b", socket.AF_INET6)
    leg_a, leg_b = legs(lab, a, b)
    _, leg_b6 = legs(lab, a, b6, socket.AF_INET6)
    assert not engine("bind", key="mixed", a=leg_a, b=leg_b6)["ok"]
    assert not engine("bind", key="same", a=leg_a, b=[leg_a[0], leg_b[1]])["ok"]
    own = [[lab.v4("b", 1), LOW + 10], leg_b[1]]  # one of the relay's own ports
    assert not engine("bind", key="own", a=leg_a, b=own)["ok"]
    assert engine("commit")["bound"] == []


def test_two_calls_between_the_same_two_parties_are_kept_apart(lab, engines):
    engine = start(lab, engines)
    assert engine.open(lab)["ok"]
    a, b = lab.phone("a"), lab.phone("b")
    for key, port in (("k1", LOW), ("k2", LOW + 4)):
        leg_a, leg_b = legs(lab, a, b, port_a=port, port_b=port + 2)
        assert engine("bind", key=key, a=leg_a, b=leg_b)["ok"]
    assert engine("commit")["bound"] == ["k1", "k2"]
    for port in (LOW, LOW + 4, LOW, LOW + 4):
        assert relayed(lab, a, b, port, "a") == [(b"0", (lab.v4("b", 1), port + 2))]
        assert relayed(lab, b, a, port + 2, "b") == [(b"0", (lab.v4("a", 1), port))]
    assert engine("read")["counts"] == {"k1": [2, 58, 2, 58], "k2": [2, 58, 2, 58]}


def test_a_killed_engines_table_and_flows_are_replaced_at_the_next_open(lab, engines):
    first = start(lab, engines)
    assert first.open(lab)["ok"]
    a, b = bound_pair(lab, first)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    assert len(relayed(lab, a, b, LOW, "a")) == 1  # still forwarding: table and entry
    second = start(lab, engines)
    assert second.open(lab)["ok"]
    assert second("elements")["n"] == 0
    assert relayed(lab, a, b, LOW, "a") == []
    second("close")


def flows_to(lab: Lab, port: int) -> list[list[str]]:
    """The tuples (both directions) of the conntrack entries of flows to `port`."""
    return [
        [f for f in e.split() if f.split("=")[0] in ("src", "dst", "sport", "dport")]
        for e in lab.conntrack()
        if f"dport={port} " in e
    ]


def test_a_successor_adopts_the_table_keeps_its_bindings_and_reconciles(lab, engines):
    """A live handoff's engine: the running table and its conntrack entries stay; the
    bindings it wants too go on, counted from the old readings; the one nobody wants
    goes, a new one comes, in one commit."""
    old = start(lab, engines)
    assert old.open(lab)["ok"]
    a, b, a2, b2, a3, b3 = (lab.phone(side) for side in "ababab")
    kept = legs(lab, a, b)
    dropped = legs(lab, a2, b2, port_a=LOW + 4, port_b=LOW + 6)
    added = legs(lab, a3, b3, port_a=LOW + 8, port_b=LOW + 10)
    old("bind", key="k", a=kept[0], b=kept[1])
    old("bind", key="gone", a=dropped[0], b=dropped[1])
    old("commit")
    assert len(relayed(lab, a, b, LOW, "a", n=4)) == 4
    assert len(relayed(lab, a2, b2, LOW + 4, "a")) == 1
    assert old("read")["counts"]["k"][0] == 4
    handed = old("export")["bindings"]
    assert len(handed) == 2
    nat = flows_to(lab, LOW)
    assert nat
    assert len(relayed(lab, a, b, LOW, "a", n=3)) == 3  # after the export: the new one's
    new = start(lab, engines)
    assert new.open(lab, adopt=True)["ok"]
    assert new("elements")["n"] == old("elements")["n"]  # nothing replaced
    new("bind", key="k", a=kept[0], b=kept[1])
    new("bind", key="new", a=added[0], b=added[1])
    assert new("adopt", handed=handed)["kept"] == 1
    assert new("commit")["bound"] == ["k", "new"]
    assert flows_to(lab, LOW) == nat  # not flushed (a new entry would not be NATed)
    assert len(relayed(lab, a, b, LOW, "a", n=2)) == 2
    assert relayed(lab, a2, b2, LOW + 4, "a") == []
    assert len(relayed(lab, a3, b3, LOW + 8, "a")) == 1
    counts = new("read")["counts"]
    assert counts["k"][0] == 5 and counts["new"][0] == 1 and "gone" not in counts
    old.proc.send_signal(signal.SIGKILL)  # a predecessor leaves without a clean-up
    old.proc.wait()
    new("close")
    assert not lab.instance_tables()


def test_two_instances_never_touch_each_other(lab, engines):
    one = start(lab, engines, table="rtpproxy_one")
    two = start(lab, engines, table="rtpproxy_two")
    assert one.open(lab)["ok"]
    assert two.open(lab, LOW + 100, HIGH + 100)["ok"]
    a, b = lab.phone("a"), lab.phone("b")
    leg_a, leg_b = legs(lab, a, b)
    one("bind", key="k", a=leg_a, b=leg_b)
    one("commit")
    c, d = lab.phone("a"), lab.phone("b")
    leg_c, leg_d = legs(lab, c, d, port_a=LOW + 100, port_b=LOW + 102)
    two("bind", key="k", a=leg_c, b=leg_d)
    two("commit")
    one("close")
    assert lab.instance_tables() == ["ip rtpproxy_two", "ip6 rtpproxy_two"]
    assert relayed(lab, a, b, LOW, "a") == []
    assert len(relayed(lab, c, d, LOW + 100, "a")) == 1
    # A third instance with two's port range flushes only its own addresses' flows.
    assert two("read")["counts"]["k"][0] == 1
    two("close")
