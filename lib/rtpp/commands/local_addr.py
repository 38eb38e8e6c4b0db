"""Which local (listen) address a leg of U/L gets (PROTOCOL.md §7.7).

The configured addresses are `Config.listen` in command-line order (in bridge mode the
internal and external addresses first). As in the classic, where more than one address
fits, the one configured last wins: the default for an address family, and the entry
an `L<addr>`/`R<addr>` modifier lands on (which brings its advertised address along).
"""

from __future__ import annotations

import socket

from rtpp.commands.command import AddrMods
from rtpp.commands.errors import CommandError, ECode
from rtpp.config import Config, ListenAddr
from rtpp.netutil import check_bindable, family_of, numeric_host, routed_source


def mods_family(mods: AddrMods) -> int:
    return socket.AF_INET6 if mods.ipv6 else socket.AF_INET


def last_of_family(config: Config, family: int) -> ListenAddr:
    for laddr in reversed(config.listen):
        if laddr.family == family:
            return laddr
    raise CommandError(ECode.INVLARG_6)


def configured(config: Config, host: str) -> ListenAddr | None:
    """The last configured entry bound to `host` (numeric text), if any."""
    family = family_of(host)
    for laddr in reversed(config.listen):
        if laddr.family == family and laddr.host == host:
            return laddr
    return None


def explicit(mods: AddrMods, config: Config) -> ListenAddr | None:
    """The address named by an L{label}, L<addr> or R<addr> modifier (E31, E32)."""
    if mods.local_label is not None:
        for laddr in config.listen:
            if laddr.label == mods.local_label:
                return laddr
        raise CommandError(ECode.INVLARG_1)
    if mods.local_addr is not None:
        return _bindable(mods.local_addr, config)
    if mods.route_to is not None:
        return _routed(mods.route_to, config)
    return None


def _bindable(host: str, config: Config) -> ListenAddr:
    try:
        host = numeric_host(host)
        found = configured(config, host)
        if found is not None:
            return found
        check_bindable(host)
    except OSError as exc:
        raise CommandError(ECode.INVLARG_1) from exc
    return ListenAddr(family_of(host), host)


def _routed(host: str, config: Config) -> ListenAddr:
    try:
        source = routed_source(host)
    except OSError as exc:
        raise CommandError(ECode.INVLARG_2) from exc
    return configured(config, source) or ListenAddr(family_of(source), source)


def default_for(mods: AddrMods, config: Config) -> ListenAddr:
    """The first listen address, or the last one of the command's family when the first
    is of the other (E36 when there is none)."""
    default = config.listen[0]
    family = mods_family(mods)
    return default if default.family == family else last_of_family(config, family)


def check(mods: AddrMods, config: Config) -> ListenAddr | None:
    """Everything the modifiers name, checked before the session is looked up (as the
    classic does): E31/E32/E36 even when the command then allocates nothing.
    Returns the explicit address, if any."""
    chosen = explicit(mods, config)
    if chosen is None and not mods.bridge:
        default_for(mods, config)
    return chosen


def bridge_side(config: Config, letter: str) -> ListenAddr:
    assert config.bridge is not None  # the parser allows E/I only in bridge mode
    internal, external = config.bridge
    return external if letter == "e" else internal


def for_new_session(
    mods: AddrMods, config: Config, chosen: ListenAddr | None
) -> tuple[ListenAddr, ListenAddr]:
    """(leg 1, leg 0) local addresses of a new session; `chosen` from `check`."""
    if chosen is not None:
        return chosen, chosen
    default = default_for(mods, config)
    if mods.bridge:
        l1 = bridge_side(config, mods.bridge[0])
        l0 = bridge_side(config, mods.bridge[1]) if len(mods.bridge) > 1 else default
        return l1, l0
    return default, default


def for_leg(
    current: ListenAddr | None, mods: AddrMods, config: Config, chosen: ListenAddr | None
) -> ListenAddr:
    """The local address for a leg of an existing session that gets (new) ports."""
    if chosen is not None:
        return chosen
    if mods.new_port and len(mods.bridge) > 1:
        return bridge_side(config, mods.bridge[1])
    if current is not None and (mods.bridge or current.family == mods_family(mods)):
        return current
    return default_for(mods, config)
