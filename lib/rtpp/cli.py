"""rtpproxy: RTP media relay driven by the classic rtpproxy control protocol.

Usage:
  rtpproxy [options]...

Synopsis:
  rtpproxy [-2fvFiPaRbD] [-l addr1[/addr2]] [-6 addr1[/addr2]] [-s path]
    [-t tos] [-r rdir [-S sdir]] [-T ttl] [-L nfiles] [-m port_min]
    [-M port_max] [-u uname[:gname]] [-w sock_mode] [-n timeout_socket]
    [-d log_level[:log_facility]] [-p pid_file] [-c fifo | rr]
    [-A addr1[/addr2]] [-W setup_ttl]
  rtpproxy -V

Options:
  -f                  Stay in the foreground; log to stderr.
  -F                  Do not refuse/warn when running as root.
  -l ADDR             IPv4 media address: [label@]addr[=adv] or addr1/addr2 (bridge).
  -6 ADDR             IPv6 media address, same forms as -l.
  -A ADV              Advertised address(es): adv or adv1/adv2.
  -s CTRL             Control socket: unix:PATH cunix:PATH udp:HOST[:PORT]
                      udp6:HOST:PORT tcp:HOST[:PORT] tcp6:HOST:PORT stdio: stdioc:
                      systemd: or a bare path. Default unix:/var/run/rtpproxy.sock.
  -n TARGET           Permitted timeout notification target: unix:PATH,
                      tcp:HOST:PORT, tcp:%%CC_SELF%%:PORT or a bare path.
  -t TOS              IP TOS of IPv4 media packets, 0..255. Default 184.
  -2                  Send small (<128 bytes) media packets twice.
  -r DIR              Directory for recordings.
  -S DIR              Spool directory for recordings in progress (needs -r).
  -R                  Do not record RTCP.
  -P                  Record in pcap format.
  -a                  Record every session.
  -p FILE             Pidfile; /dev/null means none.
                      Default /var/run/rtpproxy.pid.
  -T TTL              Session inactivity timeout, seconds. Default 60.
  -W TTL              Timeout of sessions still being set up. Default -T.
  -i                  Expire a session when either direction is idle.
  -L N                RLIMIT_NOFILE to set.
  -m PORT             Lowest media port. Default 35000.
  -M PORT             Highest media port. Default 65000.
  -b                  Allocate media ports sequentially.
  -u USER             Run as user[:group] or :group after start-up.
  -w MODE             Mode of unix control sockets, DECIMAL (493 is 0755).
  -d LEVEL            Log level DBUG|INFO|WARN|ERR|CRIT[:FACILITY]. Default ERR.
  -c POLICY           Real-time scheduling policy: fifo or rr.
  -D                  Do not chdir to / when daemonizing.
  -V                  Print the software version and exit.
  -v                  Print the protocol version and capabilities and exit.
  -C                  Print the name of the clock in use and exit.
  --dso PATH          Classic module to load: refused (see --acct for acct_csv).
  --config PATH       Classic configuration file; refused if it loads modules.
  --nice N            Scheduling priority, -20..20.
  --overload_prot     Refuse new sessions (E98) while the process uses > 90 % of a core.
  --force_asymmetric  Never latch media addresses.
  --bridge_symmetric  Do not force asymmetric sessions in bridge mode.
  --no_resolve        Never resolve host names.
  --no_redirect       Keep stdout/stderr when daemonizing; copy log lines to stderr.
  --strict-source     Packets never move a latched media leg to another source.
  --metrics ADDR      Serve /metrics (Prometheus), /health and /sessions over HTTP
                      on HOST:PORT, e.g. 127.0.0.1:9950. Off by default.
  --acct PATH         Append one JSON record per ended session to PATH
                      (reopened on SIGWINCH).
  --kernel-offload    Let the kernel forward latched plain RTP streams (nftables NAT;
                      needs CAP_NET_ADMIN).
  -h --help           Show this help.
"""

from __future__ import annotations

import getopt
import grp
import ipaddress
import os
import pwd
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping

from docopt import DocoptExit, docopt

from rtpp import __version__
from rtpp.capabilities import BASE_VERSION, CAPABILITIES
from rtpp.config import (
    DEFAULT_CTRL_SOCK,
    DEFAULT_PIDFILE,
    DEFAULT_PORT_MAX,
    DEFAULT_PORT_MIN,
    DEFAULT_TOS,
    DEFAULT_TTL_S,
    Config,
    ListenAddr,
)
from rtpp.control.spec import SpecError, parse_spec
from rtpp.modules import ModuleError, check_config, check_dso
from rtpp.netutil import ipv4_of, split_host_port

USAGE = __doc__
PROG = "rtpproxy"
CLASSIC_SHORTOPTS = "vf2Rl:6:s:S:t:r:p:T:L:m:M:u:Fin:Pad:Vc:A:w:bW:DC"
CLASSIC_LONGOPTS = [
    "dso=",
    "bridge_symmetric",
    "nice=",
    "overload_prot",
    "config=",
    "force_asymmetric",
    "no_resolve",
    "no_redirect",
    "strict-source",
    "metrics=",
    "acct=",
    "kernel-offload",
]
CLOCK_NAME = "CLOCK_MONOTONIC"
MAX_LISTEN = 16
MAX_NOTIFY_WILDCARDS = 2
MAX_NOTIFY_TARGETS = 64
DEFAULT_SOCK_MODE = 493  # 0755
LOG_LEVELS = ("DBUG", "INFO", "WARN", "ERR", "CRIT")
LOG_FACILITIES = (
    "AUTH AUTHPRIV CRON DAEMON FTP KERN LOCAL0 LOCAL1 LOCAL2 LOCAL3 LOCAL4 LOCAL5 LOCAL6 "
    "LOCAL7 LPR MAIL NEWS SYSLOG USER UUCP"
).split()
SCHED_POLICIES = ("fifo", "rr")
ROOT_UDP_MSG = (
    "running this program as superuser in a remote control mode is strongly not "
    "recommended, as it poses serious security threat to your system. Use -u option to "
    "run as an unprivileged user or -F is you want to run as a superuser anyway."
)
ROOT_WARNING = (
    "WARNING!!! Running this program as superuser is strongly not recommended, as it "
    "may pose serious security threat to your system. Use -u option to run as an "
    "unprivileged user or -F is you want to run as a superuser anyway."
)
OPEN_UDP_WARNING = (
    "WARNING!!! a UDP control socket that is not on a loopback address lets anyone who "
    "can reach it control every call (the protocol has no authentication). Bind it to "
    "127.0.0.1 or ::1, filter it, and use -u option to run as an unprivileged user."
)
_DECIMAL = re.compile(r"\s*[+-]?[0-9]+")


class UsageError(Exception):
    """A command-line error: one line on stderr (`message`), exit 1."""

    def __init__(self, message: str, show_usage: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.show_usage = show_usage


class EarlyExit(Exception):  # noqa: N818
    """An informational option was reached: print `output` on stdout, exit `status`."""

    def __init__(self, output: str, status: int = 0, to_stderr: bool = False) -> None:
        super().__init__(output)
        self.output = output
        self.status = status
        self.to_stderr = to_stderr


def usage_text() -> str:
    """The classic-looking synopsis (for -h and command-line errors)."""
    section = USAGE[USAGE.index("Synopsis:") :].split("\n\n", 1)[0]
    lines = [line[2:] for line in section.splitlines()[1:]]
    lines = [("usage: " if line.startswith(PROG) else "  ") + line.strip() for line in lines]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str], warn: Callable[[str], None] | None = None) -> Config:
    """Parse the arguments (without argv[0]) into a validated Config.

    Raises UsageError for user errors and EarlyExit for -V/-v/-C/-h/--help.
    Warnings (root without -u) go to `warn` (default: stderr).
    """
    warn = warn or _warn_stderr
    argv = [_strip_overload_arg(a) for a in argv]
    _check_help(argv)
    early = _first_informational(argv)
    if early:
        raise EarlyExit(informational_output(early))
    opts = _docopt(argv)
    opts["_listen_order"] = _listen_order(argv)
    return _build_config(opts, warn)


def _warn_stderr(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")


def _strip_overload_arg(arg: str) -> str:
    # getopt's optional argument (`--overload_prot=x`) is accepted and ignored.
    return "--overload_prot" if arg.startswith("--overload_prot=") else arg


def _check_help(argv: list[str]) -> None:
    for arg in argv:
        if arg == "--":
            return
        if arg == "--help":
            raise EarlyExit(USAGE.lstrip())
        if arg in ("-h", "-?"):
            raise EarlyExit(usage_text(), status=1, to_stderr=True)


def _docopt(argv: list[str]) -> dict:
    try:
        return docopt(USAGE, argv=argv, help=False)
    except DocoptExit as exc:
        raise UsageError(_diagnose(argv, str(exc)), show_usage=True) from None


def _diagnose(argv: list[str], docopt_message: str) -> str:
    """The classic wording for what docopt rejected."""
    try:
        _, extra = getopt.gnu_getopt(argv, CLASSIC_SHORTOPTS, CLASSIC_LONGOPTS)
    except getopt.GetoptError as exc:
        return exc.msg
    if extra:
        return f"{len(extra)} extra unhandled argument(s) at the end of the command line"
    first = docopt_message.splitlines()[0]
    return first if not first.lower().startswith("usage") else "invalid command line"


def _listen_order(argv: list[str]) -> list[tuple[int, str]]:
    """-l/-6 values in command-line order (docopt keeps the order per option only)."""
    try:
        parsed, _ = getopt.gnu_getopt(argv, CLASSIC_SHORTOPTS, CLASSIC_LONGOPTS)
    except getopt.GetoptError:
        return []
    families = {"-l": socket.AF_INET, "-6": socket.AF_INET6}
    return [(families[name], value) for name, value in parsed if name in families]


def _first_informational(argv: list[str]) -> str | None:
    """The first of -V/-v/-C in argv order (they act as soon as they are reached)."""
    takes_arg = set(CLASSIC_SHORTOPTS[i - 1] for i, c in enumerate(CLASSIC_SHORTOPTS) if c == ":")
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--":
            return None
        if not arg.startswith("-") or arg.startswith("--") or arg == "-":
            if arg.startswith("--") and "=" not in arg and _long_takes_arg(arg):
                skip = True
            continue
        for i, ch in enumerate(arg[1:], start=1):
            if ch in "VvC":
                return ch
            if ch in takes_arg:
                skip = i == len(arg) - 1
                break
    return None


def _long_takes_arg(arg: str) -> bool:
    name = arg[2:]
    return any(o.endswith("=") and o.startswith(name) for o in CLASSIC_LONGOPTS)


def build_id() -> str:
    env = os.environ.get("RTPP_BUILD_ID")
    if env:
        return env
    try:
        from rtpp import buildinfo  # type: ignore[attr-defined]

        return str(buildinfo.BUILD_ID)
    except ImportError:
        mtime = os.path.getmtime(__file__)
        return time.strftime("%Y%m%d%H%M%S", time.gmtime(mtime))


def informational_output(flag: str) -> str:
    if flag == "V":
        return f"{__version__}.{build_id()}\n"
    if flag == "C":
        return CLOCK_NAME + "\n"
    lines = [f"Basic version: {BASE_VERSION}"]
    lines += [f"Extension {date}: {desc}" for date, desc in CAPABILITIES]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- conversion


def _last(opts: dict, key: str) -> str | None:
    values = opts[key]
    return values[-1] if values else None


def decimal(text: str) -> int | None:
    """strtol(text, 10) consuming the whole string, or None."""
    if not _DECIMAL.fullmatch(text):
        return None
    return int(text)


#: Selects the relay driver (media/drivers.py): "greenlet" for a greenlet per stream,
#: anything else the epoll dispatcher. Read here only, once, at start-up.
RELAY_ENV = "RTPP_RELAY"


def relay_driver(environ: Mapping[str, str]) -> str:
    return "greenlet" if environ.get(RELAY_ENV) == "greenlet" else "epoll"


def _build_config(opts: dict, warn: Callable[[str], None]) -> Config:
    ctrl_socks = tuple(opts["-s"]) or (DEFAULT_CTRL_SOCK,)
    specs = [_ctrl_spec(text) for text in ctrl_socks]
    foreground = bool(opts["-f"])
    record_dir = _last(opts, "-r")
    spool_dir = _last(opts, "-S")
    ttl_s = _ttl(opts, "-T", "max TTL", DEFAULT_TTL_S)
    setup_ttl_s = _ttl(opts, "-W", "max setup TTL", ttl_s)
    port_min, port_max = _port_range(opts)
    user = _user(opts)
    log_level, log_facility = _log(opts)
    _check_dsos(opts)
    listen, bridge = parse_listen(opts, no_resolve=bool(opts["--no_resolve"]))
    listen, advertised = _advertised(opts, listen, bridge)
    if bridge is not None:  # with -A applied
        bridge = (listen[0], listen[1])
    if spool_dir is not None and record_dir is None:
        raise UsageError("-S switch requires -r switch")
    if any(s.stdio for s in specs) and not foreground:
        raise UsageError("stdio command mode requires -f switch")
    config = Config(
        listen=listen,
        bridge=bridge,
        advertised=advertised,
        ctrl_socks=ctrl_socks,
        notify_targets=_notify_targets(opts, no_resolve=bool(opts["--no_resolve"])),
        port_min=port_min,
        port_max=port_max,
        seq_ports=bool(opts["-b"]),
        tos=_tos(opts),
        dup_small=bool(opts["-2"]),
        ttl_s=ttl_s,
        setup_ttl_s=setup_ttl_s,
        ttl_independent=bool(opts["-i"]),
        force_asymmetric=bool(opts["--force_asymmetric"]),
        bridge_symmetric=bool(opts["--bridge_symmetric"]),
        strict_source=bool(opts["--strict-source"]),
        kernel_offload=bool(opts["--kernel-offload"]),
        relay_driver=relay_driver(os.environ),
        record_dir=record_dir,
        spool_dir=spool_dir,
        record_pcap=bool(opts["-P"]),
        record_all=bool(opts["-a"]),
        no_rtcp_record=bool(opts["-R"]),
        foreground=foreground,
        no_root_check=bool(opts["-F"]),
        pidfile=_last(opts, "-p") or DEFAULT_PIDFILE,
        run_user=user[0],
        run_group=user[1],
        run_uid=user[2],
        run_gid=user[3],
        sock_mode=_sock_mode(opts, group_named=user[1] is not None),
        nofile_limit=_nofile(opts),
        log_level=log_level,
        log_facility=log_facility,
        sched_policy=_sched(opts),
        no_chdir=bool(opts["-D"]),
        nice=_nice(opts),
        overload_prot=bool(opts["--overload_prot"]),
        no_resolve=bool(opts["--no_resolve"]),
        no_redirect=bool(opts["--no_redirect"]),
        config_file=_config_file(opts),
        metrics_addr=_metrics_addr(opts),
        acct_path=_acct_path(opts),
    )
    # Every option is valid by now: the warnings come after the errors, as in the classic.
    if not opts["-F"] and os.getuid() == 0 and user[0] is None:
        if any(s.datagram for s in specs):
            raise UsageError(ROOT_UDP_MSG)
        warn(ROOT_WARNING)
    if user[0] is None and any(s.datagram and not _loopback(s.host) for s in specs):
        warn(OPEN_UDP_WARNING)
    return config


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _ctrl_spec(text: str):
    try:
        return parse_spec(text)
    except SpecError as exc:
        raise UsageError(f"can't create control socket: {exc}") from None


def _ttl(opts: dict, key: str, what: str, default: int) -> int:
    text = _last(opts, key)
    if text is None:
        return default
    value = decimal(text)
    if value is None or value < 1:
        raise UsageError(f"{text}: {what} argument is invalid")
    return value


def _port(opts: dict, key: str, default: int, name: str, short: str) -> int:
    text = _last(opts, key)
    if text is None:
        return default
    value = decimal(text)
    if value is None:
        raise UsageError(f"{text}: {short} port argument is invalid")
    if not 1 <= value <= 65535:
        raise UsageError(f"invalid value of the {name} argument, not in the range 1-65535")
    return value


def _port_range(opts: dict) -> tuple[int, int]:
    port_min = _port(opts, "-m", DEFAULT_PORT_MIN, "port_min", "min")
    port_max = _port(opts, "-M", DEFAULT_PORT_MAX, "port_max", "max")
    port_min += port_min % 2
    port_max -= 1 if port_max % 2 else 2
    if port_min > port_max:
        raise UsageError("port_min should be less than port_max")
    return port_min, port_max


def _tos(opts: dict) -> int:
    text = _last(opts, "-t")
    if text is None:
        return DEFAULT_TOS
    value = decimal(text)
    if value is None:
        raise UsageError(f"{text}: TOS argument is invalid")
    if value < 0:
        raise UsageError(f"{text}: TOS is too small")
    if value > 255:
        raise UsageError(f"{text}: TOS is too large")
    return value


def _nofile(opts: dict) -> int | None:
    text = _last(opts, "-L")
    if text is None:
        return None
    value = decimal(text)
    if value is None or value < 0:
        raise UsageError(f"{text}: max file rlimit argument is invalid")
    return value


def _sock_mode(opts: dict, group_named: bool) -> int:
    text = _last(opts, "-w")
    if text is None:
        return DEFAULT_SOCK_MODE if group_named else 0
    value = decimal(text)
    if value is None or not 0 <= value <= 4095:
        raise UsageError(f"{text}: socket mode argument is invalid")
    return value


def _user(opts: dict) -> tuple[str | None, str | None, int | None, int | None]:
    """-u user, user:group or :group -> (user, group, uid, gid).

    With a bare user the gid is the user's primary group (the classic keeps gid 0).
    """
    text = _last(opts, "-u")
    if text is None:
        return None, None, None, None
    user, sep, group = text.partition(":")
    uid = gid = None
    if user:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise UsageError(f"can't find ID for the user: {user}") from None
        uid, gid = pw.pw_uid, pw.pw_gid
    if sep and group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise UsageError(f"can't find ID for the group: {group}") from None
    return user or None, (group if sep and group else None), uid, gid


def _log(opts: dict) -> tuple[str, str]:
    text = _last(opts, "-d")
    if text is None:
        return "ERR", "DAEMON"
    level, sep, facility = text.partition(":")
    if level.upper() not in LOG_LEVELS:
        raise UsageError(f"{level}: invalid log level")
    if not sep:
        return level.upper(), "DAEMON"
    name = facility.upper()
    name = name[4:] if name.startswith("LOG_") else name
    if name not in LOG_FACILITIES:
        raise UsageError(f"{facility}: invalid log facility")
    return level.upper(), name


def _sched(opts: dict) -> str | None:
    text = _last(opts, "-c")
    if text is None:
        return None
    if text not in SCHED_POLICIES:
        raise UsageError(f"{text}: unknown scheduling policy")
    return text


def _nice(opts: dict) -> int | None:
    text = _last(opts, "--nice")
    if text is None:
        return None
    value = decimal(text)
    if value is None:
        raise UsageError(f"{text}: nice level argument is invalid")
    if not -20 <= value <= 20:
        raise UsageError(f"{text}: nice level is out of range -20..20")
    return value


def _notify_targets(opts: dict, no_resolve: bool) -> tuple[str, ...]:
    targets = tuple(opts["-n"])
    wildcards = 0
    for text in targets:
        if len(text) < 1:
            raise UsageError("timeout notification socket name too short")
        if text.startswith("tcp:"):
            wildcards += _check_tcp_target(text, no_resolve)
    if wildcards > MAX_NOTIFY_WILDCARDS:
        raise UsageError("error adding timeout notification: too many wildcard targets")
    if len(targets) - wildcards > MAX_NOTIFY_TARGETS:
        raise UsageError("error adding timeout notification: too many targets")
    return targets


def _check_tcp_target(text: str, no_resolve: bool) -> int:
    host, sep, port_text = text[4:].rpartition(":")
    port = decimal(port_text) if sep else None
    if not host or port is None or not 1 <= port <= 65535:
        raise UsageError(f"error adding timeout notification: {text}: invalid address")
    if host == "%%CC_SELF%%":
        return 1
    if no_resolve:  # a host name is refused with the other option errors
        try:
            ipv4_of(host, no_resolve=True)
        except OSError as exc:
            reason = exc.strerror or exc
            raise UsageError(f"error adding timeout notification: {text}: {reason}") from None
    return 0


def _metrics_addr(opts: dict) -> tuple[str, int] | None:
    text = _last(opts, "--metrics")
    if text is None:
        return None
    addr = split_host_port(text)
    if addr is None:
        raise UsageError(f"{text}: metrics address must be HOST:PORT")
    return addr


def _acct_path(opts: dict) -> str | None:
    path = _last(opts, "--acct")
    if path is not None and not path:
        raise UsageError("accounting file name is empty")
    return path


def _check_dsos(opts: dict) -> None:
    for path in opts["--dso"]:
        try:
            check_dso(path)
        except ModuleError as exc:
            raise UsageError(exc.message) from None


def _config_file(opts: dict) -> str | None:
    path = _last(opts, "--config")
    if path is None:
        return None
    try:
        check_config(path)
    except ModuleError as exc:
        raise UsageError(exc.message) from None
    return path


# ---------------------------------------------------------------- listen addresses

_FAMILY_NAME = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}
_WILDCARD = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}


class ListenError(UsageError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"init_bindaddrs: {reason}")


def _listen_entries(opts: dict) -> list[tuple[int, str]]:
    order = opts.get("_listen_order")
    if order:
        return order
    entries = [(socket.AF_INET, v) for v in opts["-l"]]
    return entries + [(socket.AF_INET6, v) for v in opts["-6"]]


def parse_listen(
    opts: dict, no_resolve: bool
) -> tuple[tuple[ListenAddr, ...], tuple[ListenAddr, ListenAddr] | None]:
    """-l/-6 entries -> (listen addresses, bridge pair or None).

    In bridge mode the pair comes first and labelled entries may follow it; outside it
    the first entry is the default and every further one needs a label.
    """
    entries = _listen_entries(opts)
    if not entries:
        return (ListenAddr(socket.AF_INET, "0.0.0.0"),), None
    if len(entries) > MAX_LISTEN:
        raise ListenError("number of listening addresses exceeds BINDARG_MAX")
    split = [(fam, *_split_entry(text)) for fam, text in entries]
    firsts: dict[int, int] = {}
    for i, (fam, *_) in enumerate(split):
        firsts.setdefault(fam, i)
    bridging = [i for i in firsts.values() if "/" in split[i][2]]
    for i, (fam, _, host, _) in enumerate(split):
        if "/" in host and i != firsts[fam]:
            raise ListenError(
                f"only the first {_FAMILY_NAME[fam]} listening address can have external part"
            )
    if len(bridging) > 1:
        raise ListenError(
            "either IPv4 or IPv6 should be configured for external interface in "
            "bridging mode, not both"
        )
    if not bridging:
        return _labeled(split, no_resolve, labels_from=1), None
    pair, used = _bridge(split, firsts, bridging[0], no_resolve)
    rest = [entry for i, entry in enumerate(split) if i not in used]
    return pair + _labeled(rest, no_resolve, labels_from=0), pair


def _split_entry(text: str) -> tuple[str | None, str, str | None]:
    label, at, rest = text.partition("@")
    if not at:
        label, rest = None, text
    host, eq, adv = rest.partition("=")
    return label, host, (adv if eq else None)


def _bridge(split, firsts, index, no_resolve) -> tuple[tuple[ListenAddr, ListenAddr], set[int]]:
    """The (internal, external) pair and the indexes of the entries it took.

    The external address is the part after `/`; the internal one is the part before it,
    or else the first entry of the other family, and never both.
    """
    fam, label, host, adv = split[index]
    first, _, second = host.partition("/")
    internal = [(index, (fam, label, first, adv))] if first else []
    internal += [(i, split[i]) for i in firsts.values() if i != index]
    if len(internal) > 1:
        raise ListenError(
            "either IPv4 or IPv6 should be configured for internal interface in "
            "bridging mode, not both"
        )
    if not internal or not second:
        raise ListenError(
            "incomplete configuration of the bridging mode - exactly 2 listen addresses required"
        )
    (used, (ifam, ilabel, ihost, iadv)) = internal[0]
    if label is not None or adv is not None or ilabel is not None or iadv is not None:
        raise ListenError("labels and advertised addresses are not allowed in the bridging mode")
    pair = (
        ListenAddr(ifam, resolve(ihost, ifam, no_resolve)),
        ListenAddr(fam, resolve(second, fam, no_resolve)),
    )
    return pair, {index, used}


def _labeled(split, no_resolve, labels_from: int) -> tuple[ListenAddr, ...]:
    """Entries from `labels_from` on must carry a unique label."""
    seen: set[str] = set()
    out = []
    for i, (fam, label, host, adv) in enumerate(split):
        if i >= labels_from and not label:
            raise ListenError("address label is missing")
        if label:
            if label in seen:
                raise ListenError(f"duplicate label: {label}")
            seen.add(label)
        if adv == "":
            raise ListenError(f"{host}: advertised address is empty")
        out.append(ListenAddr(fam, resolve(host, fam, no_resolve), label or None, adv))
    return tuple(out)


def resolve(host: str, family: int, no_resolve: bool) -> str:
    """Listen host text -> numeric text; `*` is the wildcard, an empty text an error."""
    if host == "*":
        return _WILDCARD[family]
    if not host:
        raise ListenError("host2bindaddr(): empty address")
    flags = socket.AI_PASSIVE | (socket.AI_NUMERICHOST if no_resolve else 0)
    try:
        infos = socket.getaddrinfo(host, None, family, socket.SOCK_DGRAM, 0, flags)
    except socket.gaierror as exc:
        raise ListenError(f"host2bindaddr({host}): {exc.strerror}") from None
    return str(infos[0][4][0])


def _advertised(
    opts: dict, listen: tuple[ListenAddr, ...], bridge: tuple[ListenAddr, ListenAddr] | None
) -> tuple[tuple[ListenAddr, ...], tuple[str, ...]]:
    """Apply -A. Outside bridge mode it is the default address's advertised address."""
    text = _last(opts, "-A")
    if text is None:
        return listen, ()
    first, slash, second = text.partition("/")
    if not first:
        raise UsageError("first advertised address is invalid")
    if slash and not second:
        raise UsageError("second advertised address is invalid")
    advertised = (first, second) if slash else (first,)
    if bridge is not None:
        if not slash:
            raise UsageError(
                "two advertised addresses are required for internal and external interfaces"
            )
        return (_with_adv(listen[0], first), _with_adv(listen[1], second)) + listen[2:], advertised
    if listen[0].advertised is None:
        listen = (_with_adv(listen[0], first),) + listen[1:]
    return listen, advertised


def _with_adv(addr: ListenAddr, adv: str) -> ListenAddr:
    return ListenAddr(addr.family, addr.host, addr.label, adv)
