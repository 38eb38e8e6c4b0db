"""Command line: every classic flag, conversions and the diagnostics of OPERATIONS.md 1.7."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import subprocess

import pytest

from helpers import rtpproxy_command
from rtpp import cli
from rtpp.capabilities import CAPABILITIES, supported
from rtpp.cli import EarlyExit, ListenError, UsageError, parse_args

V4 = socket.AF_INET
V6 = socket.AF_INET6
pytestmark = pytest.mark.timeout(30)
NOTIFY_ERR = "error adding timeout notification: "
ENOENT = "No such file or directory"
BADPORT = "invalid port"


def parse(*argv: str, warnings: list | None = None):
    sink = warnings if warnings is not None else []
    return parse_args(["-F", *argv], warn=sink.append)


def error_of(*argv: str, root_check: bool = False) -> str:
    args = list(argv) if root_check else ["-F", *argv]
    with pytest.raises(UsageError) as info:
        parse_args(args, warn=lambda _m: None)
    return info.value.message


def test_defaults():
    cfg = parse()
    assert cfg.ctrl_socks == ("unix:/var/run/rtpproxy.sock",)
    assert (cfg.port_min, cfg.port_max) == (35000, 64998)
    assert cfg.ttl_s == cfg.setup_ttl_s == 60
    assert cfg.tos == 184
    assert cfg.pidfile == "/var/run/rtpproxy.pid"
    assert cfg.log_level == "ERR" and cfg.log_facility == "DAEMON"
    assert [(a.family, a.host) for a in cfg.listen] == [(V4, "0.0.0.0")]
    assert cfg.bridge is None and not cfg.foreground and cfg.sock_mode == 0


@pytest.mark.parametrize(
    ("value", "driver"),
    [(None, "epoll"), ("epoll", "epoll"), ("greenlet", "greenlet"), ("", "epoll"), ("x", "epoll")],
)
def test_the_relay_driver_comes_from_rtpp_relay_once_at_parse_time(monkeypatch, value, driver):
    if value is None:
        monkeypatch.delenv("RTPP_RELAY", raising=False)
    else:
        monkeypatch.setenv("RTPP_RELAY", value)
    cfg = parse()
    monkeypatch.setenv("RTPP_RELAY", "greenlet" if driver == "epoll" else "epoll")
    assert cfg.relay_driver == driver  # the Config keeps what start-up read


def test_every_classic_flag_is_accepted(tmp_path):
    conf = tmp_path / "rtpproxy.conf"
    conf.write_text("modules {}\n")
    cfg = parse_args(
        [
            "-f", "-F", "-2", "-R", "-i", "-P", "-a", "-b", "-D",
            "-l", "127.0.0.1", "-6", "v6@::1",
            "-s", "udp:127.0.0.1:7722", "-s", "cunix:/tmp/x.sock",
            "-S", str(tmp_path), "-r", str(tmp_path),
            "-t", "10", "-p", "/tmp/p.pid", "-T", "30", "-W", "7", "-L", "4096",
            "-m", "10000", "-M", "11000", "-u", "nobody:nogroup", "-w", "432",
            "-n", "tcp:127.0.0.1:9999", "-n", "unix:/tmp/n.sock",
            "-d", "DBUG:LOG_LOCAL5", "-c", "rr", "-A", "192.0.2.1",
            "--bridge_symmetric", "--nice", "5", "--overload_prot",
            "--config", str(conf), "--force_asymmetric", "--no_resolve", "--no_redirect",
            "--strict-source",
        ]
    )  # fmt: skip
    assert cfg.foreground and cfg.no_root_check and cfg.dup_small and cfg.no_rtcp_record
    assert cfg.ttl_independent and cfg.record_pcap and cfg.record_all and cfg.seq_ports
    assert cfg.no_chdir and cfg.bridge_symmetric and cfg.overload_prot and cfg.force_asymmetric
    assert cfg.no_resolve and cfg.no_redirect and cfg.strict_source
    assert cfg.listen[0].host == "127.0.0.1" and cfg.listen[0].advertised == "192.0.2.1"
    assert (cfg.listen[1].family, cfg.listen[1].host, cfg.listen[1].label) == (V6, "::1", "v6")
    assert cfg.ctrl_socks == ("udp:127.0.0.1:7722", "cunix:/tmp/x.sock")
    assert cfg.record_dir == cfg.spool_dir == str(tmp_path)
    assert cfg.tos == 10 and cfg.pidfile == "/tmp/p.pid"
    assert (cfg.ttl_s, cfg.setup_ttl_s, cfg.nofile_limit) == (30, 7, 4096)
    assert (cfg.port_min, cfg.port_max) == (10000, 10998)
    assert cfg.run_uid == pwd.getpwnam("nobody").pw_uid
    assert cfg.run_gid == grp.getgrnam("nogroup").gr_gid
    assert cfg.run_user == "nobody" and cfg.run_group == "nogroup" and cfg.sock_mode == 432
    assert cfg.notify_targets == ("tcp:127.0.0.1:9999", "unix:/tmp/n.sock")
    assert (cfg.log_level, cfg.log_facility, cfg.sched_policy) == ("DBUG", "LOCAL5", "rr")
    assert cfg.config_file == str(conf) and cfg.nice == 5
    assert cfg.advertised == ("192.0.2.1",)


def test_glued_and_clustered_forms():
    cfg = parse_args(["-fF", "-m10000", "-M10100", "-dDBUG:LOG_LOCAL0", "-T5", "-sudp:127.0.0.1"])
    assert cfg.foreground and cfg.no_root_check
    assert (cfg.port_min, cfg.port_max) == (10000, 10098)
    assert (cfg.log_level, cfg.log_facility, cfg.ttl_s) == ("DBUG", "LOCAL0", 5)
    assert cfg.ctrl_socks == ("udp:127.0.0.1",)


def test_long_option_forms():
    cfg = parse("--nice=-3", "--overload_prot=1", "--nice", "-20")
    assert cfg.nice == -20 and cfg.overload_prot


def test_repeated_options_accumulate_and_scalars_take_the_last():
    cfg = parse(
        "-s", "udp:127.0.0.1:1", "-s", "tcp:127.0.0.1:2", "-s", "/tmp/a", "-T", "5", "-T", "9"
    )
    assert cfg.ctrl_socks == ("udp:127.0.0.1:1", "tcp:127.0.0.1:2", "/tmp/a")
    assert cfg.ttl_s == cfg.setup_ttl_s == 9


def test_setup_ttl_defaults_to_ttl():
    assert parse("-T", "12").setup_ttl_s == 12
    assert parse("-T", "12", "-W", "3").setup_ttl_s == 3


@pytest.mark.parametrize(
    "low,high,expected",
    [("10001", "10010", (10002, 10008)), ("10000", "10011", (10000, 10010)), ("1", "3", (2, 2))],
)
def test_port_rounding(low, high, expected):
    cfg = parse("-m", low, "-M", high)
    assert (cfg.port_min, cfg.port_max) == expected


def test_numbers_are_decimal_only():
    assert parse("-w", "0660", "-u", ":nogroup").sock_mode == 660
    assert error_of("-t", "0xb8") == "0xb8: TOS argument is invalid"
    assert error_of("-T", "1_0") == "1_0: max TTL argument is invalid"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["-t", "256"], "256: TOS is too large"),
        (["-t", "-1"], "-1: TOS is too small"),
        (["-t", "x"], "x: TOS argument is invalid"),
        (["-m", "0"], "invalid value of the port_min argument, not in the range 1-65535"),
        (["-M", "70000"], "invalid value of the port_max argument, not in the range 1-65535"),
        (["-m", "abc"], "abc: min port argument is invalid"),
        (["-M", "abc"], "abc: max port argument is invalid"),
        (["-m", "2000", "-M", "1000"], "port_min should be less than port_max"),
        (["-m", "1001", "-M", "1001"], "port_min should be less than port_max"),
        (["-T", "0"], "0: max TTL argument is invalid"),
        (["-T", "abc"], "abc: max TTL argument is invalid"),
        (["-W", "-5"], "-5: max setup TTL argument is invalid"),
        (["-L", "-1"], "-1: max file rlimit argument is invalid"),
        (["-L", "x"], "x: max file rlimit argument is invalid"),
        (["-w", "4096"], "4096: socket mode argument is invalid"),
        (["-w", "x"], "x: socket mode argument is invalid"),
        (["-d", "LOUD"], "LOUD: invalid log level"),
        (["-d", "INFO:LOG_NOWHERE"], "LOG_NOWHERE: invalid log facility"),
        (["-c", "batch"], "batch: unknown scheduling policy"),
        (["--nice", "21"], "21: nice level is out of range -20..20"),
        (["--nice", "x"], "x: nice level argument is invalid"),
        (["-u", "no-such-user-here"], "can't find ID for the user: no-such-user-here"),
        (["-u", "nobody:no-such-group"], "can't find ID for the group: no-such-group"),
        (["-u", ":no-such-group"], "can't find ID for the group: no-such-group"),
        (["-A", "/b"], "first advertised address is invalid"),
        (["-A", "a/"], "second advertised address is invalid"),
        (["-n", ""], "timeout notification socket name too short"),
        (["-n", "tcp:127.0.0.1:0"], NOTIFY_ERR + "tcp:127.0.0.1:0: invalid address"),
        (["-S", "/tmp"], "-S switch requires -r switch"),
        (["-s", "stdio:"], "stdio command mode requires -f switch"),
        (["-s", "stdioc:"], "stdio command mode requires -f switch"),
        (["--dso", "/no/such.so"], "realpath: /no/such.so: No such file or directory"),
        (["--config", "/no/c"], "rtpp_cfile_process: open failed: /no/c: " + ENOENT),
        (["-s", "udp:1.2.3.4:99999"], "can't create control socket: udp:1.2.3.4:99999: " + BADPORT),
    ],
)  # fmt: skip
def test_user_errors(argv, message):
    assert error_of(*argv) == message


def test_log_level_and_facility_are_case_insensitive_with_or_without_prefix():
    assert (parse("-d", "dbug:local3").log_level, parse("-d", "dbug:local3").log_facility) == (
        "DBUG",
        "LOCAL3",
    )
    assert parse("-d", "warn:log_user").log_facility == "USER"
    assert parse("-d", "crit").log_facility == "DAEMON"


def test_too_many_wildcard_notify_targets():
    wild = "tcp:%%CC_SELF%%:9"
    assert parse("-n", wild, "-n", wild).notify_targets == (wild, wild)
    assert "too many wildcard" in error_of("-n", wild, "-n", wild, "-n", wild)


def test_no_resolve_refuses_a_notify_host_name():
    message = error_of("--no_resolve", "-n", "tcp:localhost:9999")
    assert message.startswith(NOTIFY_ERR + "tcp:localhost:9999: ")
    assert "invalid address" not in message  # the resolver's own reason
    numeric = ("tcp:127.0.0.1:9999", "tcp:%%CC_SELF%%:9", "udp:somehost:1", "/tmp/n.sock")
    flags = [a for text in numeric for a in ("-n", text)]
    assert parse("--no_resolve", *flags).notify_targets == numeric
    assert parse("-n", "tcp:localhost:9999").notify_targets == ("tcp:localhost:9999",)


def test_no_resolve_never_asks_dns_for_a_notify_host(monkeypatch):
    def no_dns(*args):
        raise AssertionError("DNS asked")

    monkeypatch.setattr(socket, "gethostbyname", no_dns)
    monkeypatch.setattr(socket, "gethostbyname_ex", no_dns)
    assert error_of("--no_resolve", "-n", "tcp:somehost.example:9999").startswith(NOTIFY_ERR)


def test_unknown_option_and_extra_arguments():
    with pytest.raises(UsageError) as info:
        parse_args(["-x"])
    assert info.value.show_usage and "x" in info.value.message
    assert error_of("-f", "extra", "words") == (
        "2 extra unhandled argument(s) at the end of the command line"
    )
    assert "not recognized" in error_of("--no-such-thing")
    assert "-N" in error_of("-N", "random")  # 2.0/2.1 option, rejected like the reference


def test_help():
    with pytest.raises(EarlyExit) as info:
        parse_args(["-h"])
    assert info.value.status == 1 and info.value.to_stderr
    assert info.value.output.startswith("usage: rtpproxy")
    with pytest.raises(EarlyExit) as info:
        parse_args(["--help"])
    assert info.value.status == 0 and "--strict-source" in info.value.output


def test_informational_flags_act_when_reached():
    with pytest.raises(EarlyExit) as info:
        parse_args(["-v", "-T", "0"])
    assert info.value.output.startswith("Basic version: 20040107\n")
    with pytest.raises(EarlyExit) as info:
        parse_args(["-m", "-V", "-C"])  # "-V" is -m's argument; -C comes first
    assert info.value.output == "CLOCK_MONOTONIC\n"


# ---------------------------------------------------------------- root check


needs_root = pytest.mark.skipif(os.getuid() != 0, reason="root check only applies to root")


@needs_root
def test_root_with_udp_control_is_refused_without_u_or_F():
    message = error_of("-s", "udp:127.0.0.1:7", root_check=True)
    assert message.startswith("running this program as superuser in a remote control mode")
    parse_args(["-s", "udp:127.0.0.1:7", "-u", "nobody"])  # accepted with -u
    parse("-s", "udp6:::1:7")  # and with -F


@needs_root
def test_root_without_udp_control_only_warns():
    warnings: list[str] = []
    parse_args(["-s", "tcp:127.0.0.1:7"], warn=warnings.append)
    assert warnings and warnings[0].startswith("WARNING!!! Running this program as superuser")
    warnings.clear()
    parse_args(["-s", "tcp:127.0.0.1:7", "-u", ":nogroup"], warn=warnings.append)
    assert warnings  # a group alone does not count


@needs_root
def test_option_errors_come_before_the_root_warning():
    warnings: list[str] = []
    with pytest.raises(UsageError) as err:
        parse_args(["-s", "tcp:127.0.0.1:7", "-t", "0xb8"], warn=warnings.append)
    assert err.value.message == "0xb8: TOS argument is invalid"
    assert warnings == []


# ---------------------------------------------------------------- -u / -w


def test_user_forms():
    nobody = pwd.getpwnam("nobody")
    cfg = parse("-u", "nobody")
    assert (cfg.run_user, cfg.run_group, cfg.run_uid) == ("nobody", None, nobody.pw_uid)
    assert cfg.run_gid == nobody.pw_gid  # the user's primary group
    assert cfg.sock_mode == 0  # no group named: no chmod
    cfg = parse("-u", ":nogroup")
    assert (cfg.run_user, cfg.run_uid, cfg.run_group) == (None, None, "nogroup")
    assert cfg.sock_mode == 493
    assert parse("-u", "nobody:nogroup", "-w", "384").sock_mode == 384


# ---------------------------------------------------------------- listen addresses


def hosts(cfg):
    return [(a.family, a.host, a.label, a.advertised) for a in cfg.listen]


def test_listen_wildcards_and_advertised():
    assert hosts(parse("-l", "*")) == [(V4, "0.0.0.0", None, None)]
    assert hosts(parse("-6", "*")) == [(V6, "::", None, None)]
    assert hosts(parse("-l", "127.0.0.1=192.0.2.66")) == [(V4, "127.0.0.1", None, "192.0.2.66")]


def test_a_outside_bridge_mode_advertises_the_default_address():
    cfg = parse("-l", "127.0.0.1", "-A", "192.0.2.55")
    assert hosts(cfg) == [(V4, "127.0.0.1", None, "192.0.2.55")]
    cfg = parse("-l", "127.0.0.1=192.0.2.1", "-A", "192.0.2.55")
    assert cfg.listen[0].advertised == "192.0.2.1"  # an explicit =adv wins
    assert parse("-A", "192.0.2.9").listen[0].advertised == "192.0.2.9"


def test_labels_follow_command_line_order():
    cfg = parse("-6", "::1", "-l", "lan@127.0.0.1=10.0.0.1", "-l", "x@127.0.0.2")
    assert hosts(cfg) == [
        (V6, "::1", None, None),
        (V4, "127.0.0.1", "lan", "10.0.0.1"),
        (V4, "127.0.0.2", "x", None),
    ]
    assert parse("-l", "first@127.0.0.1").listen[0].label == "first"


def test_hostnames_are_resolved_unless_no_resolve():
    assert parse("-l", "localhost").listen[0].host == "127.0.0.1"
    with pytest.raises(ListenError) as info:
        parse("--no_resolve", "-l", "localhost")
    assert info.value.message.startswith("init_bindaddrs: host2bindaddr(localhost)")
    with pytest.raises(ListenError):
        parse("-l", "no-such-host.invalid")


@pytest.mark.parametrize(
    "argv,reason",
    [
        (["-l", "127.0.0.1", "-6", "::1"], "address label is missing"),
        (["-l", "127.0.0.1", "-l", "127.0.0.2"], "address label is missing"),
        (["-l", "a@127.0.0.1", "-l", "a@127.0.0.2"], "duplicate label: a"),
        (["-l", "127.0.0.1", "-l", "b@127.0.0.2", "-l", "b@127.0.0.3"], "duplicate label: b"),
        (["-l", "127.0.0.1/127.0.0.2", "-6", "::1/::2"], "either IPv4 or IPv6"),
        (["-l", "127.0.0.1", "-l", "x@127.0.0.2/127.0.0.3"], "only the first IPv4"),
        (["-l", "127.0.0.1/"], "incomplete configuration of the bridging mode"),
        (["-l", "/127.0.0.1"], "incomplete configuration of the bridging mode"),
        (["-l", "127.0.0.1/127.0.0.2", "-6", "x@::1"], "internal interface in bridging mode"),
        (["-l", "192.0.2.1/", "-6", "/::1"], "either IPv4 or IPv6"),
        (["-l", "x@127.0.0.1/127.0.0.2"], "not allowed in the bridging mode"),
        (["-l", "127.0.0.1=", "-l", "a@127.0.0.2"], "advertised address is empty"),
        ([a for i in range(17) for a in ("-l", f"l{i}@127.0.0.{i + 1}")], "BINDARG_MAX"),
    ],
)
def test_listen_errors(argv, reason):
    with pytest.raises(ListenError) as info:
        parse(*argv)
    assert info.value.message.startswith("init_bindaddrs: ")
    assert reason in info.value.message


def test_bridge_forms():
    cfg = parse("-l", "127.0.0.1/127.0.0.2")
    assert cfg.bridged and cfg.asymmetric_default
    assert [a.host for a in cfg.bridge] == ["127.0.0.1", "127.0.0.2"]
    assert cfg.listen == cfg.bridge
    cfg = parse("-l", "127.0.0.1", "-6", "/::1", "--bridge_symmetric")
    assert [(a.family, a.host) for a in cfg.bridge] == [(V4, "127.0.0.1"), (V6, "::1")]
    assert not cfg.asymmetric_default
    cfg = parse("-6", "::1", "-l", "/127.0.0.1")
    assert [(a.family, a.host) for a in cfg.bridge] == [(V6, "::1"), (V4, "127.0.0.1")]


def test_bridge_pair_comes_first_and_labelled_addresses_may_follow():
    cfg = parse(
        "-l", "*", "-6", "/::", "-l", "one@127.0.0.1", "-l", "two@127.0.0.1=192.0.2.4",
        "-6", "three@::1", "-6", "four@::1=2001:db8::4",
    )  # fmt: skip
    assert [(a.family, a.host) for a in cfg.bridge] == [(V4, "0.0.0.0"), (V6, "::")]
    assert hosts(cfg) == [
        (V4, "0.0.0.0", None, None),
        (V6, "::", None, None),
        (V4, "127.0.0.1", "one", None),
        (V4, "127.0.0.1", "two", "192.0.2.4"),
        (V6, "::1", "three", None),
        (V6, "::1", "four", "2001:db8::4"),
    ]
    cfg = parse("-l", "127.0.0.1/127.0.0.2", "-l", "x@127.0.0.3", "-A", "192.0.2.1/192.0.2.2")
    assert [a.advertised for a in cfg.listen] == ["192.0.2.1", "192.0.2.2", None]
    assert cfg.listen[:2] == cfg.bridge


@pytest.mark.parametrize(
    "argv,reason",
    [
        (["-l", "*", "-6", "/::", "-l", "127.0.0.1"], "address label is missing"),
        (["-l", "*", "-6", "/::", "-l", "a@127.0.0.1", "-6", "a@::1"], "duplicate label: a"),
        (["-6", ""], "host2bindaddr(): empty address"),
        (["-l", ""], "host2bindaddr(): empty address"),
        (["-l", "127.0.0.1", "-l", "x@"], "host2bindaddr(): empty address"),
    ],
)
def test_listen_errors_with_more_addresses(argv, reason):
    with pytest.raises(ListenError) as info:
        parse(*argv)
    assert info.value.message == f"init_bindaddrs: {reason}"


def test_bridge_advertised_addresses():
    cfg = parse("-l", "127.0.0.1/127.0.0.2", "-A", "192.0.2.1/192.0.2.2")
    assert [a.advertised for a in cfg.bridge] == ["192.0.2.1", "192.0.2.2"]
    assert cfg.listen == cfg.bridge and cfg.advertised == ("192.0.2.1", "192.0.2.2")
    assert "two advertised addresses are required" in error_of(
        "-l", "127.0.0.1/127.0.0.2", "-A", "192.0.2.1"
    )


# ---------------------------------------------------------------- capabilities


def test_capability_table_and_notify_rule():
    dates = [d for d, _ in CAPABILITIES]
    assert dates[0] == "20040107" and dates == sorted(dates) and len(dates) == 25
    assert supported("20050322", False)
    assert not supported("20081224", False) and supported("20081224", True)
    assert not supported("20170313", True)


def test_usage_text_is_classic():
    text = cli.usage_text()
    assert text.startswith("usage: rtpproxy [-2fvFiPaRbD]")
    assert "rtpproxy -V" in text


# ---------------------------------------------------------------- real process


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        rtpproxy_command() + list(argv), capture_output=True, text=True, timeout=20
    )


def test_version_flag_subprocess():
    result = run("-V")
    assert result.returncode == 0
    version, build = result.stdout.strip().split(".", 3)[:3], result.stdout.strip()
    assert build.startswith("3.2.0.") and len(build) > len("3.2.0.")
    assert version[0] == "3"


def test_capabilities_flag_subprocess():
    result = run("-v")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "Basic version: 20040107"
    assert lines[1] == "Extension 20040107: Basic RTP proxy functionality"
    assert len(lines) == 1 + len(CAPABILITIES)
    assert all(line.startswith("Extension 20") for line in lines[1:])


def test_clock_flag_subprocess():
    result = run("-C")
    assert (result.returncode, result.stdout) == (0, "CLOCK_MONOTONIC\n")


def test_user_error_subprocess_exits_1_with_one_line():
    result = run("-F", "-T", "0")
    assert result.returncode == 1
    assert result.stderr == "rtpproxy: 0: max TTL argument is invalid\n"
    assert result.stdout == ""


def test_unknown_option_subprocess_prints_usage():
    result = run("-x")
    assert result.returncode == 1
    assert "usage: rtpproxy" in result.stderr


def test_listen_error_subprocess_uses_classic_style():
    result = run("-F", "-l", "127.0.0.1", "-l", "127.0.0.2")
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == "init_bindaddrs: address label is missing"


def test_metrics_and_acct_are_off_by_default():
    cfg = parse()
    assert cfg.metrics_addr is None and cfg.acct_path is None


@pytest.mark.parametrize(
    "text, addr",
    [
        ("127.0.0.1:9950", ("127.0.0.1", 9950)),
        ("[::1]:9950", ("::1", 9950)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_metrics_address(text, addr):
    assert parse("--metrics", text).metrics_addr == addr
    assert parse(f"--metrics={text}").metrics_addr == addr


@pytest.mark.parametrize("text", ["127.0.0.1", ":9950", "127.0.0.1:0", "127.0.0.1:65536", "x:y"])
def test_bad_metrics_addresses(text):
    assert error_of("--metrics", text) == f"{text}: metrics address must be HOST:PORT"


def test_acct_path():
    assert parse("--acct", "/var/log/rtpproxy/acct.json").acct_path == "/var/log/rtpproxy/acct.json"
    assert error_of("--acct", "") == "accounting file name is empty"
