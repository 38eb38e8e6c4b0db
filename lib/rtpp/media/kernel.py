"""The kernel fast path's engine: RTP pipes forwarded by netfilter (nftables NAT and
conntrack). kernel_driver.py decides which; this module knows nothing of sessions.

A binding joins two legs, each a remote party and the local socket address that party
sends to. Packets from `a.remote` to `a.local` are rewritten by DNAT to `b.remote` and
by SNAT to come from `b.local` (and the other way round), so they never reach the
process. One nftables table per daemon instance holds, per address family:

* `d4`/`d6`: `saddr . sport . daddr . dport -> addr . port`, the DNAT target, consulted
  in the nat prerouting chain (packets arriving on an interface) and the nat output
  chain (packets sent on this host);
* `s4`/`s6`: the local address and port the connection was opened to -> the one its
  packets leave from, consulted in nat postrouting only for connections that were
  DNATed (`ct status dnat`): without that condition direct traffic between the same two
  endpoints would be rewritten too. Keyed by our own ports, it holds one element per
  side even when many calls share the same two parties' addresses;
* `c4_0`..`c6_15`: sets of local address . port with a per-element counter, reached
  through the verdict map `cv4`/`cv6` from a filter chain in postrouting: a packet of
  a DNATed connection (`ct status dnat`) counts at the local address its party sent it
  to, which conntrack keeps for either direction (the original tuple's destination
  for the party that opened the connection, the reply tuple's for the other): the
  exact packet and byte count of each direction of each binding, in SHARDS sets per
  family. The NAT chains cannot count: they only see a connection's first packet.

NAT is decided when a conntrack entry is created, so every change deletes the affected
entries: adding a binding (a stranger's or a user-space flow's entry without NAT would
outlive it), moving it, and removing it (the NATed entry would keep forwarding). The
relay's own sends from its port range are not tracked, so only the parties' packets
make entries. The
order within `commit` keeps the counts exact: removed bindings lose their NAT elements
and then their conntrack entries before their counters are read for the last time and
deleted; added bindings get their elements before their stale entries are deleted.

Element changes are queued (`bind`, `unbind`) and applied in a few libnftables
transactions by `commit`; conntrack entries are deleted through pyroute2. Nothing here
spawns a process or builds netlink messages by hand.
"""

from __future__ import annotations

import errno
import importlib.util
import ipaddress
import logging
import os
import re
import socket
import sys
import zlib
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Where Debian's python3-nftables puts the libnftables ctypes wrapper (any Python 3).
DIST_PACKAGES = ("/usr/lib/python3/dist-packages",)
TABLE_PREFIX = "rtpproxy_"
UDP = socket.IPPROTO_UDP
_FAMILIES = {socket.AF_INET: ("4", "ip", "ipv4_addr"), socket.AF_INET6: ("6", "ip6", "ipv6_addr")}
_FORWARDING = {
    socket.AF_INET: ("net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward"),
    socket.AF_INET6: (
        "net.ipv6.conf.all.forwarding",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ),
}
#: One counted element in `list set` text output: addr . port . addr . port counter ...
_COUNTED = re.compile(r"([0-9a-fA-F.:]+) \. (\d+) counter packets (\d+) bytes (\d+)")

#: The table of one address family ({p}: ip or ip6; {s}: 4 or 6), between the braces of
#: `table {p} NAME`. One table per family, not one inet table: a packet then passes only
#: its own family's base chains. Every packet leaving or crossing the host passes the
#: counting chain (one `ct status` test unless it was DNATed), every packet sent from
#: the host the untracked chain (a port comparison), and the NAT chains see only a
#: connection's first packet. What
#: the relay sends from its own sockets (user space) is not tracked: an entry it made
#: would stand, as the reply direction, for the party's packets to that socket and keep
#: them from being NATed once the stream is bound. A rule is one line: nft ends a rule
#: at the end of a line.
_FAMILY_TEMPLATE = """
  map d{s} {{ type {a} . inet_service . {a} . inet_service : {a} . inet_service; }}
  map s{s} {{ type {a} . inet_service : {a} . inet_service; }}
  map cv{s} {{ type {a} . inet_service : verdict; }}
  chain pre {{
    type nat hook prerouting priority dstnat;
    dnat to {flow} map @d{s}
  }}
  chain out {{
    type nat hook output priority -100;
    dnat to {flow} map @d{s}
  }}
  chain post {{
    type nat hook postrouting priority srcnat;
    ct status dnat meta l4proto udp snat to {opened} map @s{s}
  }}
  chain count {{
    type filter hook postrouting priority filter;
    ct status dnat jump counted
  }}
  chain counted {{
    meta l4proto udp ct direction original {opened} vmap @cv{s}
    meta l4proto udp ct direction reply {answered} vmap @cv{s}
  }}
  chain untracked {{
    type filter hook output priority raw;
    udp sport {low}-{high} notrack
  }}
"""
#: One shard of a family's counters: the set and the chain `cv{s}` sends packets to.
_SHARD_TEMPLATE = """
  set c{s}_{j} {{ type {a} . inet_service; counter; }}
  chain k{s}_{j} {{
    meta l4proto udp ct direction original {opened} @c{s}_{j}
    meta l4proto udp ct direction reply {answered} @c{s}_{j}
  }}
"""
#: Counter sets per family. A binding's two counters sit in one shard; its last figures
#: are read from that shard alone (libnftables takes about 7 us per listed element,
#: which the 1 Hz read pays for all).
SHARDS = 16

Address = tuple[str, int]
#: Packets and bytes from a to b, then from b to a.
Counts = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class _Orphan:
    """The key of a handed-over binding no stream of the successor wants."""

    index: int


class OffloadError(Exception):
    """libnftables or conntrack refused an operation."""


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of a binding: the party's address and the local address it sends to."""

    remote: Address
    local: Address


@dataclass(frozen=True, slots=True)
class _Binding:
    family: int
    a: Leg  # local addresses resolved (never a wildcard)
    b: Leg

    def dnat(self) -> list[tuple[tuple, tuple]]:
        """party . local -> the other party, for each party's packets."""
        a, b = self.a, self.b
        return [((*a.remote, *a.local), b.remote), ((*b.remote, *b.local), a.remote)]

    def snat(self) -> list[tuple[tuple, tuple]]:
        """The local address a connection was opened to -> the one it leaves from."""
        a, b = self.a, self.b
        return [(a.local, b.local), (b.local, a.local)]

    def counted(self) -> tuple[Address, Address]:
        """The counter keys of the a->b and the b->a direction: where each party sends."""
        return self.a.local, self.b.local

    @property
    def shard(self) -> str:
        """The name suffix of the binding's counter set and chain: 4_3, 6_15."""
        j = zlib.crc32(repr(self.a.local).encode()) % SHARDS
        return f"{_FAMILIES[self.family][0]}_{j}"

    def flows(self) -> list[tuple[Address, Address]]:
        """(source, destination) of each party's packets to us: their conntrack tuples."""
        return [(self.a.remote, self.a.local), (self.b.remote, self.b.local)]


def table_name(port_min: int, port_max: int, hosts: Iterable[str]) -> str:
    """The instance's table: the same for a restart with the same addresses and ports,
    different for an instance on other addresses or another port range."""
    tag = zlib.crc32(" ".join(sorted(hosts)).encode())
    return f"{TABLE_PREFIX}{port_min}_{port_max}_{tag:08x}"


def import_nftables() -> Any:
    """The `nftables` module: from sys.path (a bundle), else from Debian's dist-packages.

    Only that package is loaded from there, so nothing else in dist-packages can shadow
    the program's own dependencies.
    """
    try:
        import nftables  # type: ignore[import-not-found]

        return nftables
    except ImportError:
        pass
    for base in DIST_PACKAGES:
        init = os.path.join(base, "nftables", "__init__.py")
        if not os.path.exists(init):
            continue
        spec = importlib.util.spec_from_file_location(
            "nftables", init, submodule_search_locations=[os.path.dirname(init)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["nftables"] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules["nftables"]
            raise
        return module
    raise ImportError("no nftables module (Debian package python3-nftables)")


def forwarding_missing(families: Iterable[int]) -> list[tuple[int, str]]:
    """(family, sysctl) of each family whose forwarding is off."""
    missing = []
    for family in families:
        name, path = _FORWARDING[family]
        try:
            with open(path) as f:
                on = f.read().strip() != "0"
        except OSError:
            on = False
        if not on:
            missing.append((family, name))
    return missing


class KernelOffload:
    """The kernel route of one daemon instance. Use `open`; all calls are synchronous."""

    def __init__(self, nft: Any, ct: Any, table: str, port_min: int, port_max: int) -> None:
        self.nft = nft
        self.ct: dict[int, Any] = ct  # pyroute2 Conntrack per address family
        self.table = table
        self.port_min = port_min
        self.port_max = port_max
        self.families: set[int] = set()
        self.live: dict[Hashable, _Binding] = {}  # committed
        self.wanted: dict[Hashable, _Binding] = {}  # after the queued changes
        self._owner: dict[tuple, Hashable] = {}  # d and c element keys of `wanted`
        self._seen: dict[tuple, tuple[int, int]] = {}  # last read counter of a c key
        self._pending: dict[Hashable, list[int]] = {}  # counts not yet taken
        self._touched: set[Hashable] = set()  # keys bound or unbound since the last commit
        self.closed = False

    # Start-up and shut-down.

    @classmethod
    def open(
        cls,
        table: str,
        port_min: int,
        port_max: int,
        locals_: Iterable[tuple[int, str]],
        check_forwarding: bool = True,
        adopt: bool = False,
    ) -> KernelOffload | None:
        """Create the instance's table (replacing a stale one) and flush the conntrack
        entries a killed instance left in the port range. None, after one log line per
        missing prerequisite, when the kernel route cannot work here.

        `adopt` (a live handoff's successor): keep the running table, its elements and
        the conntrack entries; `adopt_bindings` then takes over the bindings."""
        locals_ = list(locals_)
        try:
            nft = import_nftables().Nftables()
        except (ImportError, OSError) as exc:
            log.warning("kernel offload off, relaying in user space: no libnftables (%s)", exc)
            return None
        try:
            import pyroute2.conntrack  # noqa: F401
        except ImportError as exc:
            log.warning("kernel offload off, relaying in user space: no pyroute2 (%s)", exc)
            return None
        self = cls(nft, {}, table, port_min, port_max)
        try:
            if adopt:
                self._check_table()
            else:
                self._create_table()
        except OffloadError as exc:
            log.warning(
                "kernel offload off, relaying in user space: cannot %s nftables table "
                "%s (needs CAP_NET_ADMIN and nf_tables with NAT): %s",
                "take over" if adopt else "create",
                table,
                exc,
            )
            return None
        try:
            # Quiet: pyroute2 and asyncio log every request at debug level.
            for name in ("pyroute2", "asyncio"):
                logging.getLogger(name).setLevel(logging.WARNING)
            self.ct = {family: _Conntrack(family) for family in _FAMILIES}
            if not adopt:
                self.flush_stale(locals_)
        except Exception as exc:
            log.warning("kernel offload off, relaying in user space: conntrack not usable: %s", exc)
            if not adopt:
                self._delete_table()
            return None
        families = {family for family, _ in locals_}
        crossing = {family for family, host in locals_ if not _is_loopback(host)}
        for family, name in forwarding_missing(crossing) if check_forwarding else []:
            log.warning(
                "kernel offload: IPv%s media stays in user space: %s is 0",
                _FAMILIES[family][0],
                name,
            )
            families.discard(family)
        if not families:
            if not adopt:
                self.close()
            return None
        self.families = families
        verb = "taken over" if adopt else "on"
        log.info("kernel offload %s: nftables tables ip and ip6 %s", verb, table)
        return self

    def close(self) -> None:
        """Remove every binding (and its conntrack entries) and the table."""
        if self.closed:
            return
        for key in list(self.wanted):
            self.unbind(key)
        try:
            self.commit()
        except OffloadError as exc:
            log.error("kernel offload: removing bindings failed: %s", exc)
        self._delete_table()
        self.closed = True
        for ct in (self.ct or {}).values():
            ct.close()

    def _create_table(self) -> None:
        """Replace the table in one transaction. In libnftables' text syntax: its JSON
        parser (1.0.6) crashes on a NAT statement whose target is a concatenated map."""
        parts = []
        for suffix, proto, addr in _FAMILIES.values():
            table = f"{proto} {self.table}"
            parts += [f"add table {table}", f"delete table {table}", f"table {table} {{"]
            parts.append(
                _FAMILY_TEMPLATE.format(
                    s=suffix,
                    p=proto,
                    a=addr,
                    low=self.port_min,
                    high=self.port_max,
                    flow=f"{proto} saddr . udp sport . {proto} daddr . udp dport",
                    opened=f"ct original {proto} daddr . ct original proto-dst",
                    answered=f"ct reply {proto} daddr . ct reply proto-dst",
                )
            )
            for j in range(SHARDS):
                parts.append(
                    _SHARD_TEMPLATE.format(
                        s=suffix,
                        a=addr,
                        j=j,
                        opened=f"ct original {proto} daddr . ct original proto-dst",
                        answered=f"ct reply {proto} daddr . ct reply proto-dst",
                    )
                )
            parts.append("}")
        rc, _, err = self.nft.cmd("\n".join(parts))
        if rc != 0:
            raise OffloadError(_first_line(err) or f"libnftables returned {rc}")

    def _check_table(self) -> None:
        """The running instance's tables must be there to be adopted."""
        for _, proto, _ in _FAMILIES.values():
            rc, _, err = self.nft.cmd(f"list chain {proto} {self.table} counted")
            if rc != 0:
                raise OffloadError(_first_line(err) or f"no table {proto} {self.table}")

    def _delete_table(self) -> None:
        try:
            self._run(
                [
                    {"delete": {"table": {"family": proto, "name": self.table}}}
                    for _, proto, _ in _FAMILIES.values()
                ]
            )
        except OffloadError as exc:
            log.error("kernel offload: cannot remove table %s: %s", self.table, exc)

    def flush_stale(self, locals_: list[tuple[int, str]]) -> int:
        """Delete the conntrack entries with one of our addresses and a port of our range
        on either side: at start-up they can only be a previous instance's. The kernel
        filters the dump by our addresses (the parties open every entry we NAT: our own
        sends are not tracked), unless we listen on a wildcard address."""
        stale = []
        for family in {family for family, _ in locals_}:
            hosts = {_canonical(family, host) for f, host in locals_ if f == family}
            wildcard = any(ipaddress.ip_address(h).is_unspecified for h in hosts)
            filters = (
                [_tuple(family)] if wildcard else [_tuple(family, dst=(h, None)) for h in hosts]
            )
            for tup in filters:
                for entry in self.ct[family].dump(tup):
                    if any(
                        self._ours(ends, hosts, wildcard)
                        for ends in (entry.tuple_orig, entry.tuple_reply)
                    ):
                        stale.append((family, entry.tuple_orig))
        for family in _FAMILIES:
            self.ct[family].delete([tup for f, tup in stale if f == family])
        if stale:
            log.info("kernel offload: flushed %d stale conntrack entries", len(stale))
        return len(stale)

    def _ours(self, tup: Any, hosts: set[str], wildcard: bool) -> bool:
        for host, port in ((tup.saddr, tup.sport), (tup.daddr, tup.dport)):
            if self.port_min <= (port or 0) <= self.port_max and (wildcard or host in hosts):
                return True
        return False

    # Bindings.

    def bind(self, key: Hashable, a: Leg, b: Leg) -> bool:
        """Queue forwarding between `a` and `b` under `key` (replacing what `key` had);
        False, with `key` unbound, when the kernel cannot forward this pair."""
        binding = self._resolve(a, b)
        if binding is not None and self.wanted.get(key) == binding:
            return True
        self.unbind(key)
        if binding is None:
            return False
        keys = self._element_keys(binding)
        if any(k in self._owner for k in keys):
            return False  # the same pair of parties in another binding
        for k in keys:
            self._owner[k] = key
        self.wanted[key] = binding
        self._note(key)
        return True

    def unbind(self, key: Hashable) -> None:
        binding = self.wanted.pop(key, None)
        if binding is not None:
            for k in self._element_keys(binding):
                self._owner.pop(k, None)
            self._note(key)

    def is_bound(self, key: Hashable) -> bool:
        """True when `key` is forwarded by the kernel (committed)."""
        return key in self.live

    @property
    def dirty(self) -> bool:
        return bool(self._touched)

    def _note(self, key: Hashable) -> None:
        """Keep `key` among the changes to commit while its wanted state differs from
        the committed one (and only then: nothing is kept for a no-op)."""
        if self.wanted.get(key) != self.live.get(key):
            self._touched.add(key)
        else:
            self._touched.discard(key)

    @staticmethod
    def _element_keys(binding: _Binding) -> list[tuple]:
        return [k for k, _ in binding.dnat()] + list(binding.counted())

    def _resolve(self, a: Leg, b: Leg) -> _Binding | None:
        family = _family_of(a.remote[0])
        if family not in self.families or any(
            _family_of(addr[0]) != family for addr in (a.local, b.remote, b.local)
        ):
            return None
        legs = []
        for leg in (a, b):
            remote = (_canonical(family, leg.remote[0]), leg.remote[1])
            if not self._forwardable(family, remote):
                return None
            host = _canonical(family, leg.local[0])
            if ipaddress.ip_address(host).is_unspecified:
                host = _routed_source(family, remote)
                if host is None:
                    return None
            legs.append(Leg(remote, (host, leg.local[1])))
        if legs[0].remote == legs[1].remote:
            return None
        return _Binding(family, legs[0], legs[1])

    def _forwardable(self, family: int, remote: Address) -> bool:
        ip = ipaddress.ip_address(remote[0])
        if not 0 < remote[1] < 65536 or ip.is_unspecified or ip.is_multicast:
            return False
        if family == socket.AF_INET6 and ip.is_link_local:
            return False  # NAT has no zone to send it out of
        # One of our own ports (a call routed through this relay twice): NAT would
        # deliver it locally, where SNAT does not apply; user space handles it.
        return not (self.port_min <= remote[1] <= self.port_max and _is_local(family, remote[0]))

    # A live handoff.

    def export(self) -> list:
        """The committed bindings with their counters' last readings (JSON values)."""
        out = []
        for b in self.live.values():
            seen = [list(self._seen.get(k, (0, 0))) for k in b.counted()]
            legs = [[*leg.remote, *leg.local] for leg in (b.a, b.b)]
            out.append([b.family, *legs, *seen])
        return out

    def adopt_bindings(self, handed: list) -> int:
        """Take over the bindings `export` listed in the predecessor: a queued binding
        (`bind`) that is among them is committed already, its counters read from where
        the predecessor stopped; one nobody binds is queued for removal. `commit` then
        applies the difference in one pass. Returns how many were taken over as they are."""
        orphans = 0
        adopted = 0
        by_binding = {b: key for key, b in self.wanted.items()}
        for family, a, b, seen_ab, seen_ba in handed:
            binding = _Binding(
                int(family),
                Leg((a[0], int(a[1])), (a[2], int(a[3]))),
                Leg((b[0], int(b[1])), (b[2], int(b[3]))),
            )
            key = by_binding.get(binding)
            if key is None or key in self.live:
                key = _Orphan(orphans)
                orphans += 1
            else:
                adopted += 1
            self.live[key] = binding
            for ckey, seen in zip(binding.counted(), (seen_ab, seen_ba), strict=True):
                self._seen[ckey] = (int(seen[0]), int(seen[1]))
            self._note(key)
        return adopted

    # Committing.

    def commit(self) -> None:
        """Apply the queued changes; once it returns no packet takes a removed route.

        Raises OffloadError when libnftables refused a change; the bindings it could
        not add are then unbound (their streams stay in user space)."""
        touched, self._touched = self._touched, set()
        removed = {k: self.live[k] for k in touched if k in self.live}
        removed = {k: b for k, b in removed.items() if self.wanted.get(k) != b}
        added = {k: self.wanted[k] for k in touched if k in self.wanted}
        added = {k: b for k, b in added.items() if self.live.get(k) != b}
        if not removed and not added:
            return
        if removed:
            self._run([{"delete": {"element": e}} for e in self._nat_elements(removed.values())])
            self._flush_flows(removed.values())
            # Their last figures; the other bindings of their shards are read too.
            shards = {b.shard for b in removed.values()}
            self._read({k: b for k, b in self.live.items() if b.shard in shards}, shards)
            for key in removed:
                del self.live[key]
            cmds = [{"delete": {"element": e}} for e in self._count_elements(removed.values())]
            for binding in removed.values():
                for ckey in binding.counted():
                    self._seen.pop(ckey, None)
            self._run(cmds)
        if added:
            elements = self._count_elements(added.values()) + self._nat_elements(added.values())
            try:
                self._run([{"add": {"element": e}} for e in elements])
            except OffloadError:
                for key in added:
                    self.unbind(key)
                raise
            self.live.update(added)
            self._flush_flows(added.values())

    def _nat_elements(self, bindings: Iterable[_Binding]) -> list[dict]:
        out: dict[str, list] = {}
        for b in bindings:
            suffix = _FAMILIES[b.family][0]
            for name, pairs in (("d", b.dnat()), ("s", b.snat())):
                out.setdefault(name + suffix, []).extend(
                    [{"concat": list(k)}, {"concat": list(v)}] for k, v in pairs
                )
        return [self._elements(name, elem) for name, elem in out.items()]

    def _count_elements(self, bindings: Iterable[_Binding]) -> list[dict]:
        out: dict[str, list] = {}
        for b in bindings:
            keys = [{"concat": list(k)} for k in b.counted()]
            out.setdefault("c" + b.shard, []).extend(keys)
            jump = {"goto": {"target": "k" + b.shard}}
            out.setdefault("cv" + _FAMILIES[b.family][0], []).extend([k, jump] for k in keys)
        return [self._elements(name, elem) for name, elem in out.items()]

    def _elements(self, name: str, elem: list) -> dict:
        family = "ip6" if name.lstrip("cdsv").startswith("6") else "ip"
        return {"family": family, "table": self.table, "name": name, "elem": elem}

    def _flush_flows(self, bindings: Iterable[_Binding]) -> None:
        """Delete the conntrack entries of the parties' flows to us (NATed or not):
        a lookup by one direction's tuple finds an entry by either of its tuples."""
        flows: dict[int, set] = {}
        for b in bindings:
            flows.setdefault(b.family, set()).update(b.flows())
        for family, pairs in flows.items():
            self.ct[family].delete([_tuple(family, src, dst) for src, dst in pairs])

    # Counters.

    def read_counters(self, keys: Iterable[Hashable] | None = None) -> dict[Hashable, Counts]:
        """Packets and bytes relayed per binding since the last call, in one read of the
        counter sets (with `keys`, of their shards only); bindings removed since then
        included (their last figures, read when they were removed)."""
        live = self.live
        if keys is not None:
            shards = {live[k].shard for k in keys if k in live}
            live = {k: b for k, b in live.items() if b.shard in shards}
        if live:
            self._read(live, {b.shard for b in live.values()})
        return self.take_counts()

    def take_counts(self) -> dict[Hashable, Counts]:
        """What earlier reads found and no call took yet (no read of the kernel)."""
        pending, self._pending = self._pending, {}
        return {
            key: tuple(v)  # type: ignore[misc]
            for key, v in pending.items()
            if not isinstance(key, _Orphan)
        }

    def _read(self, bindings: dict[Hashable, _Binding], shards: set[str]) -> None:
        """Add what the counters of `bindings` (all in `shards`) gained to _pending."""
        by_ckey: dict[tuple, tuple[Hashable, int]] = {}
        for key, binding in bindings.items():
            ab, ba = binding.counted()
            by_ckey[ab] = (key, 0)
            by_ckey[ba] = (key, 2)
        text = self._list(sorted(shards))
        seen = self._seen
        for m in _COUNTED.finditer(text):
            ckey = (m[1], int(m[2]))
            found = by_ckey.get(ckey)
            if found is None:
                continue
            pkts, nbytes = int(m[3]), int(m[4])
            last = seen.get(ckey, (0, 0))
            if (pkts, nbytes) == last:
                continue
            seen[ckey] = (pkts, nbytes)
            key, at = found
            counts = self._pending.setdefault(key, [0, 0, 0, 0])
            counts[at] += pkts - last[0]
            counts[at + 1] += nbytes - last[1]

    def _list(self, shards: list[str]) -> str:
        """`list set` output of counter sets, in text: libnftables formats counters about
        twice as fast as text than as JSON, and this runs every second."""
        nft = self.nft
        out = []
        for shard in shards:
            family = "ip6" if shard.startswith("6") else "ip"
            rc, text, err = nft.cmd(f"list set {family} {self.table} c{shard}")
            if rc != 0:
                raise OffloadError(err.strip())
            out.append(text)
        return "".join(out)

    def element_count(self) -> int:
        """Elements in the table's maps and sets (a leak check)."""
        total = 0
        for _, proto, _ in _FAMILIES.values():
            rc, out, err = self.nft.json_cmd({"nftables": [{"list": {"table": {
                "family": proto, "name": self.table}}}]})  # fmt: skip
            if rc != 0:
                raise OffloadError(err.strip())
            total += sum(
                len(obj.get(kind, {}).get("elem", ()))
                for obj in out["nftables"]
                for kind in ("map", "set")
            )
        return total

    def _run(self, cmds: list[dict]) -> None:
        if not cmds:
            return
        rc, _, err = self.nft.json_cmd({"nftables": cmds})
        if rc != 0:
            raise OffloadError(_first_line(err) or f"libnftables returned {rc}")


#: Conntrack deletions in flight at once: every one is answered on the same netlink
#: socket, and thousands at once (a shutdown with many calls) overflow its receive
#: buffer, losing answers that would then be awaited for ever.
CONNTRACK_CHUNK = 64
#: How long one chunk of conntrack requests may wait for its answers.
CONNTRACK_TIMEOUT_S = 2.0


class _Conntrack:
    """pyroute2's conntrack requests of one address family, run to completion at once.

    The requests of one call go out together on one netlink socket and their answers
    are awaited together. pyroute2 keeps its socket and loop in a thread-local, which
    gevent makes greenlet-local; this one is shared by the whole thread, so commands,
    the sweeper and the relay can all call in."""

    def __init__(self, family: int) -> None:
        from pyroute2.conntrack import AsyncConntrack

        self.loop = _blocking_event_loop()
        self.ct = AsyncConntrack(nfgen_family=family, use_event_loop=self.loop)
        self.ct.local = _thread_local()
        self.loop.run_until_complete(self.ct.setup_endpoint())

    def delete(self, tuples: list) -> None:
        """Delete the entries with these tuples; a tuple with no entry is no error."""
        if not tuples:
            return
        import asyncio

        from pyroute2.netlink.exceptions import NetlinkError

        async def run(chunk: list) -> list:
            requests = [self.ct.entry("del", tuple_orig=t) for t in chunk]
            gathered = asyncio.gather(*requests, return_exceptions=True)
            return await asyncio.wait_for(gathered, CONNTRACK_TIMEOUT_S)

        for start in range(0, len(tuples), CONNTRACK_CHUNK):
            try:
                results = self.loop.run_until_complete(run(tuples[start : start + CONNTRACK_CHUNK]))
            except TimeoutError as exc:
                raise OffloadError("conntrack delete: no answer from the kernel") from exc
            for result in results:
                if isinstance(result, NetlinkError):
                    if result.code != errno.ENOENT:
                        raise OffloadError(f"conntrack delete: {result}")
                elif isinstance(result, BaseException):
                    raise OffloadError(f"conntrack delete: {result!r}")

    def dump(self, tup: Any) -> list:
        async def run() -> list:
            return [entry async for entry in await self.ct.dump_entries(tuple_orig=tup)]

        return self.loop.run_until_complete(run())

    def close(self) -> None:
        self.ct.close()
        self.loop.close()


def _thread_local() -> Any:
    try:
        from gevent.monkey import get_original

        return get_original("_thread", "_local")()
    except (ImportError, AttributeError):
        import threading

        return threading.local()


def _blocking_event_loop() -> Any:
    """An asyncio loop on the OS's own selector for pyroute2's requests.

    pyroute2 runs each request to completion on an asyncio loop. Under gevent's monkey
    patching a new loop would select through the hub, which cannot be waited on from the
    hub's own callbacks (the relay's dispatcher, where a packet can move a binding); a
    netlink request is answered at once, so blocking the process for it is right."""
    import asyncio
    import selectors

    try:
        from gevent.monkey import get_original

        epoll = get_original("selectors", "EpollSelector")
    except ImportError:
        epoll = selectors.EpollSelector
    return asyncio.SelectorEventLoop(epoll())


def _first_line(err: str) -> str:
    return next((line.strip() for line in err.splitlines() if line.strip()), "")


def _tuple(family: int, src: tuple | None = None, dst: tuple | None = None, proto=UDP) -> Any:
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    return NFCTAttrTuple(
        family=family,
        saddr=src[0] if src else None,
        daddr=dst[0] if dst else None,
        proto=proto,
        sport=src[1] if src else None,
        dport=dst[1] if dst else None,
    )


def _family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _canonical(family: int, host: str) -> str:
    """The text libnftables and conntrack print for an address (no zone)."""
    return socket.inet_ntop(family, socket.inet_pton(family, host.partition("%")[0]))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return False


def _is_local(family: int, host: str) -> bool:
    """True when `host` is an address of this host (binding to it works)."""
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, 0))
        except OSError:
            return False
    return True


def _routed_source(family: int, remote: Address) -> str | None:
    """The local address the kernel sends from towards `remote` (for a wildcard bind)."""
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect(remote)
        except OSError:
            return None
        return _canonical(family, s.getsockname()[0])
