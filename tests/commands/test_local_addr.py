"""Local address selection for U/L: labels, L/R addresses, families, bridge sides."""

from __future__ import annotations

import socket

import pytest

from rtpp.commands import local_addr
from rtpp.commands.command import AddrMods
from rtpp.commands.errors import CommandError, ECode
from rtpp.config import Config, ListenAddr

V4, V6 = socket.AF_INET, socket.AF_INET6

#: The shape of `-l * -6 /:: -l one@127.0.0.1 -l two@127.0.0.1=192.0.2.4
#: -6 three@::1 -6 four@::1=2001:db8::4`: a bridge pair, then labelled addresses.
INTERNAL = ListenAddr(V4, "0.0.0.0")
EXTERNAL = ListenAddr(V6, "::")
ONE = ListenAddr(V4, "127.0.0.1", "one")
TWO = ListenAddr(V4, "127.0.0.1", "two", "192.0.2.4")
THREE = ListenAddr(V6, "::1", "three")
FOUR = ListenAddr(V6, "::1", "four", "2001:db8::4")
LABELLED = Config(listen=(INTERNAL, EXTERNAL, ONE, TWO, THREE, FOUR), bridge=(INTERNAL, EXTERNAL))
#: `-l 127.0.0.1 -6 /::1 -A 192.0.2.1/2001:db8::1`
BRIDGE_V4 = ListenAddr(V4, "127.0.0.1", None, "192.0.2.1")
BRIDGE_V6 = ListenAddr(V6, "::1", None, "2001:db8::1")
ADVERTISED = Config(listen=(BRIDGE_V4, BRIDGE_V6), bridge=(BRIDGE_V4, BRIDGE_V6))
PLAIN = Config(listen=(ListenAddr(V4, "127.0.0.1"),))


def ecode(mods: AddrMods, config: Config) -> ECode:
    with pytest.raises(CommandError) as info:
        local_addr.check(mods, config)
    return info.value.ecode


def test_labels_select_their_address_and_its_advertised_address():
    assert local_addr.check(AddrMods(local_label="one"), LABELLED) == ONE
    assert local_addr.check(AddrMods(local_label="four", ipv6=True), LABELLED) == FOUR
    assert ecode(AddrMods(local_label="five"), LABELLED) == ECode.INVLARG_1


def test_the_family_default_is_the_last_address_of_that_family():
    mods = AddrMods(ipv6=True)
    assert local_addr.check(mods, LABELLED) is None
    assert local_addr.for_new_session(mods, LABELLED, None) == (FOUR, FOUR)
    assert local_addr.for_new_session(AddrMods(), LABELLED, None) == (INTERNAL, INTERNAL)


def test_a_family_without_any_address_is_e36_unless_bridge_letters_decide():
    assert ecode(AddrMods(ipv6=True), PLAIN) == ECode.INVLARG_6
    bridged = Config(listen=(INTERNAL, ListenAddr(V4, "127.0.0.2")), bridge=None)
    assert ecode(AddrMods(ipv6=True), bridged) == ECode.INVLARG_6
    assert local_addr.check(AddrMods(ipv6=True, bridge="ie"), LABELLED) is None


def test_l_address_lands_on_the_configured_entry_configured_last():
    assert local_addr.check(AddrMods(local_addr="127.0.0.1"), LABELLED) == TWO
    assert local_addr.check(AddrMods(local_addr="::1"), LABELLED) == FOUR
    # Another spelling of the same address (inet_aton accepts it) finds it too.
    assert local_addr.check(AddrMods(local_addr="127.1"), LABELLED) == TWO


def test_l_address_not_configured_must_be_bindable():
    assert local_addr.check(AddrMods(local_addr="127.0.0.9"), PLAIN) == ListenAddr(V4, "127.0.0.9")
    assert ecode(AddrMods(local_addr="192.0.2.99"), PLAIN) == ECode.INVLARG_1
    assert ecode(AddrMods(local_addr="1:2:3:4:5"), PLAIN) == ECode.INVLARG_1
    assert ecode(AddrMods(local_addr="300.1.1.1"), PLAIN) == ECode.INVLARG_1


def test_r_address_takes_the_routed_source_with_its_advertised_address():
    assert local_addr.check(AddrMods(route_to="::1"), ADVERTISED) == BRIDGE_V6
    assert local_addr.check(AddrMods(route_to="127.0.0.1"), ADVERTISED) == BRIDGE_V4
    assert local_addr.check(AddrMods(route_to="127.0.0.1"), PLAIN) == PLAIN.listen[0]
    assert local_addr.check(AddrMods(route_to="127.0.0.5"), PLAIN) == ListenAddr(V4, "127.0.0.1")
    assert ecode(AddrMods(route_to="1:2:3:4:5"), PLAIN) == ECode.INVLARG_2


def test_bridge_letters_pick_the_sides_of_a_new_session():
    mods = AddrMods(bridge="ie")
    assert local_addr.for_new_session(mods, LABELLED, None) == (INTERNAL, EXTERNAL)
    mods = AddrMods(bridge="e")
    assert local_addr.for_new_session(mods, LABELLED, None) == (EXTERNAL, INTERNAL)
    chosen = local_addr.check(AddrMods(bridge="ie", local_label="three"), LABELLED)
    assert local_addr.for_new_session(AddrMods(bridge="ie"), LABELLED, chosen) == (THREE, THREE)


def test_existing_leg_keeps_its_address_unless_told_otherwise():
    plain = AddrMods()
    assert local_addr.for_leg(ONE, plain, LABELLED, None) == ONE
    assert local_addr.for_leg(ONE, AddrMods(ipv6=True), LABELLED, None) == FOUR
    assert local_addr.for_leg(None, plain, LABELLED, None) == INTERNAL
    assert local_addr.for_leg(ONE, plain, LABELLED, TWO) == TWO
    renew = AddrMods(new_port=True, bridge="ie")
    assert local_addr.for_leg(ONE, renew, LABELLED, None) == EXTERNAL
