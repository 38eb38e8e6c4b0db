"""rtpp.media.kernel without the kernel: names, element keys, queued changes, the
counter listing parser; the sequence skew re-latching uses, and the analyzer's runs
across a spell in the kernel."""

from __future__ import annotations

import socket

from rtpp.media.kernel import _COUNTED, KernelOffload, Leg, _Binding, table_name


def engine() -> KernelOffload:
    made = KernelOffload(None, {}, "rtpproxy_t", 30000, 30099)
    made.families = {socket.AF_INET, socket.AF_INET6}
    return made


A = Leg(("192.0.2.10", 4000), ("198.51.100.1", 30000))
B = Leg(("203.0.113.20", 5000), ("198.51.100.2", 30002))


def test_table_names_are_stable_and_per_instance():
    one = table_name(35000, 65001, ["192.0.2.1", "2001:db8::1"])
    assert one == table_name(35000, 65001, ["2001:db8::1", "192.0.2.1"])
    assert one.startswith("rtpproxy_35000_65001_")
    assert one != table_name(35000, 65001, ["192.0.2.2"])
    assert one != table_name(35000, 50001, ["192.0.2.1", "2001:db8::1"])


def test_binding_elements():
    b = _Binding(socket.AF_INET, A, B)
    assert b.dnat() == [
        (("192.0.2.10", 4000, "198.51.100.1", 30000), ("203.0.113.20", 5000)),
        (("203.0.113.20", 5000, "198.51.100.2", 30002), ("192.0.2.10", 4000)),
    ]
    assert b.snat() == [(A.local, B.local), (B.local, A.local)]
    assert b.counted() == (A.local, B.local)
    assert b.flows() == [(A.remote, A.local), (B.remote, B.local)]
    assert b.shard == _Binding(socket.AF_INET, A, B).shard


def test_changes_are_queued_until_commit_and_collisions_refused():
    e = engine()
    assert e.bind("k", A, B)
    assert e.dirty and not e.is_bound("k")
    assert e.bind("k", A, B)  # the same again: no change
    other = Leg(A.remote, ("198.51.100.1", 30004))
    assert e.bind("k2", other, Leg(B.remote, ("198.51.100.2", 30006)))  # same parties
    assert not e.bind("k3", other, Leg(B.remote, ("198.51.100.2", 30008)))  # a port in use
    assert "k3" not in e.wanted
    e.unbind("k")
    e.unbind("k2")
    assert not e.dirty
    assert e.bind("k3", other, Leg(B.remote, ("198.51.100.2", 30008)))


def test_pairs_the_kernel_cannot_forward_are_refused():
    e = engine()
    v6 = Leg(("2001:db8::5", 5000), ("2001:db8::1", 30002))
    assert not e.bind("mixed", A, v6)
    assert not e.bind("hairpin", A, Leg(A.remote, B.local))
    assert not e.bind("nowhere", A, Leg(("0.0.0.0", 5000), B.local))
    assert not e.bind("port0", A, Leg(("203.0.113.20", 0), B.local))
    link_local = Leg(("fe80::2%1", 5000), ("2001:db8::1", 30002))
    assert not e.bind("ll", Leg(("2001:db8::5", 4000), ("2001:db8::1", 30000)), link_local)
    loop = Leg(("127.0.0.1", 30010), ("127.0.0.1", 30002))  # one of our own ports
    assert not e.bind("own", Leg(("127.0.0.1", 4000), ("127.0.0.1", 30000)), loop)
    e.families = {socket.AF_INET6}
    assert not e.bind("v4 off", A, B)


def test_ipv6_addresses_are_canonical():
    e = engine()
    a = Leg(("2001:DB8:0::5", 4000), ("2001:db8::1", 30000))
    b = Leg(("2001:db8:0:0::6", 5000), ("2001:db8::1", 30002))
    assert e.bind("k", a, b)
    assert e.wanted["k"].a.remote == ("2001:db8::5", 4000)


def test_counter_listing_parser():
    text = (
        "table inet rtpproxy_t {\n\tset c4_3 {\n\t\tcounter\n"
        "\t\telements = { 10.0.2.1 . 30002 counter packets 7 bytes 896,\n"
        "\t\t\t     10.0.1.1 . 30000 counter packets 0 bytes 0 }\n\t}\n"
        "\tset c6_1 {\n"
        "\t\telements = { fd00:2::1 . 30004 counter packets 12 bytes 2040 }\n"
        "\t}\n}\n"
    )
    found = [(m[1], int(m[2]), int(m[3]), int(m[4])) for m in _COUNTED.finditer(text)]
    assert found == [
        ("10.0.2.1", 30002, 7, 896),
        ("10.0.1.1", 30000, 0, 0),
        ("fd00:2::1", 30004, 12, 2040),
    ]


def test_sequence_skew_follows_the_kernel_relayed_packets():
    import struct

    from rtpp.media.analyzer import RtpAnalyzer
    from rtpp.media.kernel_driver import _mark
    from rtpp.media.session import Session

    sess = Session("c", "f;1", 0.0, 0.0)
    st = sess.rtp.streams[0]
    st.analyzer = RtpAnalyzer()
    st.analyzer.feed(struct.pack("!BBHII", 0x80, 0, 1, 0, 7) + bytes(160), 0.0)
    _mark(sess.rtp, True)
    st.nkernel += 100
    assert st.seq_skew == 100
    _mark(sess.rtp, False)  # back in user space, nothing analysed yet
    assert st.seq_skew == 100
    st.analyzer.feed(struct.pack("!BBHII", 0x80, 0, 102, 0, 7) + bytes(160), 1.0)
    assert st.seq_skew == 0  # the analyzer is up to date again
    assert st.analyzer.nlost == 0  # a new run after the kernel's packets
    _mark(sess.rtp, True)
    st.nkernel += 5
    _mark(sess.rtp, True, moved=True)  # re-latched: counts from here
    st.nkernel += 3
    assert st.seq_skew == 3


def test_packets_the_kernel_relayed_are_neither_received_nor_lost_for_the_analyzer():
    import struct

    from rtpp.media.analyzer import RtpAnalyzer
    from rtpp.media.rtp import HEADER, RECORD

    def defer(an: RtpAnalyzer, data: bytes, arrival: float) -> None:
        """What the relay's fast path does with a plain packet (analysed at sync)."""
        an.pending += RECORD.pack(arrival, *HEADER.unpack_from(data))

    def packet(seq: int) -> bytes:
        return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, 7) + bytes(160)

    for skipped in (0, 100, 536, 537, 40000):
        an = RtpAnalyzer()
        for seq in range(65530, 65540):  # across the wrap
            defer(an, packet(seq), seq * 0.02)
        if skipped:
            an.skip_run(skipped)
        nfed = an.nfed
        for seq in range(65540 + skipped, 65550 + skipped):
            defer(an, packet(seq), seq * 0.02)
        assert (an.nsent, an.nrcvd, an.nlost, an.ndups) == (20, 20, 0, 0), skipped
        assert an.nfed == nfed + 10

    plain = RtpAnalyzer()
    for seq in [*range(10), *range(110, 120)]:
        plain.feed(packet(seq), seq * 0.02)
    assert plain.nlost == 100  # without skip_run a short spell is a gap
