"""Latching as a table: README "Latching", rules 1-5, on both sides of a leg's address.

Each packet-side row sets up a leg, offers one packet from one source, and states
what latch.judge_packet decides and where the leg points afterwards. The
controller-side rows give a U/L's address to a leg and state what it keeps.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

import pytest

from rtpp.media.analyzer import RtpAnalyzer
from rtpp.media.latch import (
    RELATCH_SEQ_RANGE,
    UPDATE_WINDOW_S,
    Verdict,
    command_remote,
    judge_packet,
)
from rtpp.media.session import Session, Stream

NOW = 1000.0
SSRC = 0x11223344
PHONE = ("192.0.2.10", 4000)
NATTED = ("198.51.100.20", 31000)
SAME_HOST = ("192.0.2.10", 4010)
STRANGER = ("203.0.113.66", 5004)
LAST_SEQ = 100


def rtp(seq: int, ssrc: int = SSRC) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc) + bytes(160)


RTCP_SR = struct.pack("!BBHI", 0x80, 200, 6, SSRC) + bytes(20)
SHORT = b"\x80\x00\x01"


@dataclass(frozen=True)
class Leg:
    """How a leg stands before the packet."""

    remote: tuple | None = PHONE
    latched: bool = True  # with `remote`: latched by earlier packets from it
    rtp: bool = True
    asymmetric: bool = False
    heard: bool = True  # the analyzer has seen SSRC up to LAST_SEQ from `remote`
    command_age_s: float = 1e9  # since a command last changed the address


def make_leg(leg: Leg) -> Stream:
    sess = Session("call", "tag", 0.0, 0.0)
    sess.complete = True
    pipe = sess.rtp if leg.rtp else sess.rtcp
    st = pipe.streams[1]
    st.analyzer = RtpAnalyzer() if leg.rtp else None
    if leg.heard and st.analyzer is not None:
        for seq in range(LAST_SEQ - 4, LAST_SEQ + 1):
            st.analyzer.feed(rtp(seq), NOW - 1)
    st.remote = leg.remote
    st.latched = leg.latched and leg.remote is not None
    st.learned = st.latched
    st.asymmetric = leg.asymmetric
    st.cmd_changed_at = NOW - leg.command_age_s
    return st


UNLATCHED = Leg(latched=False, heard=False)
RTCP = Leg(rtp=False, heard=False)

# (rule, what, leg, packet, source, --strict-source, verdict)
# fmt: off
PACKET_CASES = [
    ("1", "a leg with no address takes the first source", Leg(remote=None, heard=False),
     rtp(1), NATTED, False, Verdict.LATCH),
    ("1", "so does an RTCP leg with no address", Leg(remote=None, rtp=False, heard=False),
     RTCP_SR, NATTED, False, Verdict.LATCH),
    ("2", "a signalled address moves once to the first source (NAT)", UNLATCHED,
     rtp(1), NATTED, False, Verdict.MOVE),
    ("2", "even with --strict-source: it is not latched yet", UNLATCHED,
     rtp(1), NATTED, True, Verdict.MOVE),
    ("2", "the signalled address itself latches it", UNLATCHED,
     rtp(1), PHONE, False, Verdict.CONFIRM),
    ("2", "an RTCP guess is taken by the first RTCP packet from anywhere",
     Leg(rtp=False, latched=False, heard=False), RTCP_SR, STRANGER, False, Verdict.MOVE),
    ("3", "the latched source is accepted", Leg(), rtp(LAST_SEQ + 1), PHONE, False,
     Verdict.ACCEPT),
    ("3", "another source is dropped", Leg(), rtp(LAST_SEQ + 1, ssrc=7), STRANGER, False,
     Verdict.DROP),
    ("3", "the stream's own SSRC, next sequence number, re-latches (NAT rebinding)", Leg(),
     rtp(LAST_SEQ + 1), NATTED, False, Verdict.RELATCH),
    ("3", "own SSRC at the edge of the sequence window re-latches", Leg(),
     rtp(LAST_SEQ + RELATCH_SEQ_RANGE), NATTED, False, Verdict.RELATCH),
    ("3", "own SSRC beyond the sequence window is dropped", Leg(),
     rtp(LAST_SEQ + RELATCH_SEQ_RANGE + 1), NATTED, False, Verdict.DROP),
    ("3", "own SSRC behind, within the window (across the wrap), re-latches", Leg(),
     rtp(LAST_SEQ - RELATCH_SEQ_RANGE), NATTED, False, Verdict.RELATCH),
    ("3", "any RTP source re-latches within the window after a changed address",
     Leg(command_age_s=UPDATE_WINDOW_S - 1), rtp(5, ssrc=7), STRANGER, False, Verdict.RELATCH),
    ("3", "the window closes after UPDATE_WINDOW_S",
     Leg(command_age_s=UPDATE_WINDOW_S + 1), rtp(5, ssrc=7), STRANGER, False, Verdict.DROP),
    ("3", "not RTP: never re-latches, window or not", Leg(command_age_s=1.0),
     SHORT, STRANGER, False, Verdict.DROP),
    ("3", "a leg that has heard no SSRC does not re-latch",
     Leg(heard=False), rtp(LAST_SEQ + 1), NATTED, False, Verdict.DROP),
    ("3", "a latched RTCP leg never moves", RTCP, RTCP_SR, NATTED, False, Verdict.DROP),
    ("3", "not even within the window", Leg(rtp=False, heard=False, command_age_s=1.0),
     RTCP_SR, NATTED, False, Verdict.DROP),
    ("4", "--strict-source: own SSRC does not move a latched leg", Leg(),
     rtp(LAST_SEQ + 1), NATTED, True, Verdict.DROP),
    ("4", "--strict-source: nor does a changed address", Leg(command_age_s=1.0),
     rtp(LAST_SEQ + 1), NATTED, True, Verdict.DROP),
    ("4", "--strict-source: the latched source is accepted", Leg(),
     rtp(LAST_SEQ + 1), PHONE, True, Verdict.ACCEPT),
    ("5", "asymmetric: any port of the signalled host is accepted, the leg stays",
     Leg(asymmetric=True, latched=False), rtp(1), SAME_HOST, False, Verdict.ACCEPT),
    ("5", "asymmetric: another host is dropped",
     Leg(asymmetric=True, latched=False), rtp(1), NATTED, False, Verdict.DROP),
    ("5", "asymmetric: own SSRC does not help another host", Leg(asymmetric=True),
     rtp(LAST_SEQ + 1), NATTED, False, Verdict.DROP),
]
# fmt: on


@pytest.mark.parametrize(
    ("rule", "what", "leg", "packet", "src", "strict", "verdict"),
    PACKET_CASES,
    ids=[f"rule{case[0]}-{i}" for i, case in enumerate(PACKET_CASES)],
)
def test_packet_side(rule, what, leg, packet, src, strict, verdict):
    st = make_leg(leg)
    before = st.remote
    assert judge_packet(st, packet, len(packet), src, NOW, strict) is verdict, what
    if verdict in (Verdict.ACCEPT, Verdict.DROP):
        return
    st.take_source(src, verdict)
    assert st.latched
    if verdict is Verdict.CONFIRM:
        assert st.remote == before and not st.learned
    else:
        assert st.remote == src and st.learned


def test_learning_an_rtp_source_points_rtcp_at_the_next_port():
    sess = Session("call", "tag", 0.0, 0.0)
    rtp_st, rtcp_st = sess.leg(1)
    rtp_st.take_source(NATTED, Verdict.LATCH)
    assert rtcp_st.remote == (NATTED[0], NATTED[1] + 1) and not rtcp_st.latched


def test_a_learned_rtcp_source_is_not_replaced_by_a_guess():
    sess = Session("call", "tag", 0.0, 0.0)
    rtp_st, rtcp_st = sess.leg(1)
    rtcp_st.take_source(STRANGER, Verdict.LATCH)
    rtp_st.take_source(NATTED, Verdict.LATCH)
    assert rtcp_st.remote == STRANGER


# The controller side: a U/L names the party's address (command_remote).

NEW = ("192.0.2.99", 6000)

# (what, leg before, address given, remote after, latched after, window opened)
# fmt: off
COMMAND_CASES = [
    ("a fresh leg takes the address, not latched yet", Leg(remote=None, heard=False),
     PHONE, PHONE, False, False),
    ("a new address re-points an unlatched leg and opens the window", UNLATCHED,
     NEW, NEW, False, True),
    ("the same address again opens no window", UNLATCHED, PHONE, PHONE, False, False),
    ("an address learned from packets is kept; the window opens", Leg(),
     NEW, PHONE, True, True),
]
# fmt: on


@pytest.mark.parametrize(
    ("what", "leg", "addr", "remote", "latched", "window"),
    COMMAND_CASES,
    ids=[f"command-{i}" for i in range(len(COMMAND_CASES))],
)
def test_controller_side(what, leg, addr, remote, latched, window):
    st = make_leg(leg)
    if leg.remote is not None:
        st.cmd_remote = leg.remote
    rtcp = st.session.rtcp.streams[st.index]
    command_remote(st, rtcp, *addr, socket.AF_INET, False, NOW)
    assert (st.remote, st.latched) == (remote, latched), what
    assert (st.cmd_changed_at == NOW) == window, what
    assert st.cmd_remote == addr
    assert rtcp.cmd_remote == (addr[0], addr[1] + 1)


def test_hold_keeps_the_address():
    st = make_leg(Leg())
    rtcp = st.session.rtcp.streams[st.index]
    command_remote(st, rtcp, "0.0.0.0", 5000, socket.AF_INET, True, NOW)
    assert st.on_hold and rtcp.on_hold and st.remote == PHONE


def test_the_last_port_has_no_rtcp_neighbour():
    st = make_leg(Leg(remote=None, heard=False))
    rtcp = st.session.rtcp.streams[st.index]
    command_remote(st, rtcp, "192.0.2.1", 65535, socket.AF_INET, False, NOW)
    assert st.remote == ("192.0.2.1", 65535) and rtcp.remote is None
