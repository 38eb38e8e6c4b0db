"""The daemon's typed configuration, built from the command line by `rtpp.cli`."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

DEFAULT_CTRL_SOCK = "unix:/var/run/rtpproxy.sock"
DEFAULT_PIDFILE = "/var/run/rtpproxy.pid"
DEFAULT_PORT_MIN = 35000
DEFAULT_PORT_MAX = 65000
DEFAULT_TTL_S = 60
DEFAULT_TOS = 184


@dataclass(frozen=True, slots=True)
class ListenAddr:
    """One media listen address (`-l`/`-6` entry, or one side of a bridge)."""

    family: int  # socket.AF_INET or socket.AF_INET6
    host: str  # numeric text; "0.0.0.0" or "::" for the wildcard
    label: str | None = None
    advertised: str | None = None  # replaces `host` in replies

    @property
    def wildcard(self) -> bool:
        return self.host in ("0.0.0.0", "::")

    @property
    def ipv6(self) -> bool:
        return self.family == socket.AF_INET6


@dataclass(frozen=True, slots=True)
class Config:
    # Addresses.  `listen[0]` is the default listen address; in bridge mode
    # `bridge` = (internal, external) and `listen` starts with the same two entries.
    listen: tuple[ListenAddr, ...] = (ListenAddr(socket.AF_INET, "0.0.0.0"),)
    bridge: tuple[ListenAddr, ListenAddr] | None = None
    advertised: tuple[str, ...] = ()  # -A adv or adv1/adv2
    ctrl_socks: tuple[str, ...] = (DEFAULT_CTRL_SOCK,)  # -s, verbatim
    notify_targets: tuple[str, ...] = ()  # -n, verbatim
    # Media.
    port_min: int = DEFAULT_PORT_MIN  # after rounding (even)
    port_max: int = DEFAULT_PORT_MAX - 2  # after rounding: highest even RTP port
    seq_ports: bool = False  # -b
    tos: int = DEFAULT_TOS  # -t
    dup_small: bool = False  # -2
    ttl_s: int = DEFAULT_TTL_S  # -T
    setup_ttl_s: int = DEFAULT_TTL_S  # -W (defaults to -T)
    ttl_independent: bool = False  # -i
    force_asymmetric: bool = False  # --force_asymmetric
    bridge_symmetric: bool = False  # --bridge_symmetric
    strict_source: bool = False  # --strict-source: a latched leg never moves
    kernel_offload: bool = False  # --kernel-offload: plain RTP pipes forwarded by the kernel
    #: A live handoff's successor: take over the running kernel route's table, not replace it.
    kernel_adopt: bool = False
    relay_driver: str = "epoll"  # "epoll" or "greenlet" (media/drivers.py; RTPP_RELAY)
    # Recording.
    record_dir: str | None = None  # -r
    spool_dir: str | None = None  # -S
    record_pcap: bool = False  # -P
    record_all: bool = False  # -a
    no_rtcp_record: bool = False  # -R
    # Daemon.
    foreground: bool = False  # -f
    no_root_check: bool = False  # -F
    pidfile: str = DEFAULT_PIDFILE  # -p
    run_user: str | None = None  # -u user part
    run_group: str | None = None  # -u group part
    run_uid: int | None = None
    run_gid: int | None = None
    sock_mode: int = 0  # -w (decimal on the command line)
    nofile_limit: int | None = None  # -L
    log_level: str = "ERR"  # -d level (DBUG INFO WARN ERR CRIT)
    log_facility: str = "DAEMON"  # -d :facility, without LOG_
    sched_policy: str | None = None  # -c fifo|rr
    no_chdir: bool = False  # -D
    nice: int | None = None  # --nice
    overload_prot: bool = False  # --overload_prot
    no_resolve: bool = False  # --no_resolve
    no_redirect: bool = False  # --no_redirect
    config_file: str | None = None  # --config
    # Observability.
    metrics_addr: tuple[str, int] | None = None  # --metrics host:port
    acct_path: str | None = None  # --acct
    extra: dict = field(default_factory=dict)

    @property
    def bridged(self) -> bool:
        return self.bridge is not None

    @property
    def asymmetric_default(self) -> bool:
        return self.force_asymmetric or (self.bridged and not self.bridge_symmetric)
