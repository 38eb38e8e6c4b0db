"""Live handoff (SIGUSR2): the calls, the commands in flight, recordings, players and
notifications survive five handoffs in a row under load; failed handoffs lose nothing."""

from __future__ import annotations

import os
import random
import re
import secrets
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from helpers import (
    PORT_BASE,
    PORT_BLOCK,
    PORT_TOP,
    Proxy,
    free_udp_port,
    pid_alive,
    rtpproxy_command,
    short_tmpdir,
)
from helpers import _flag_value as _flag_value
from integration.media_load import MediaLoad
from integration.media_util import kamailio_call, rtp
from integration.test_recording import parse_adhoc
from integration.test_timeouts import Listener

pytestmark = pytest.mark.timeout(180)

HANDOFF_TIMEOUT_S = 30.0


def port_span(blocks: int) -> tuple[int, int]:
    """`blocks` consecutive blocks of the helpers' media port plan."""
    count = (PORT_TOP - PORT_BASE) // PORT_BLOCK
    first = random.randrange(count - blocks)
    low = PORT_BASE + first * PORT_BLOCK
    return low, low + blocks * PORT_BLOCK - 1


def pidfile_pid(proxy: Proxy) -> int | None:
    try:
        return int(Path(_flag_value(proxy.args, "-p") or "").read_text())
    except (OSError, ValueError):
        return None


def serving_pid(proxy: Proxy) -> int:
    pid = pidfile_pid(proxy)
    assert pid is not None
    return pid


def hand_over(proxy: Proxy, timeout: float = HANDOFF_TIMEOUT_S, old_exits: bool = True) -> int:
    """SIGUSR2 to the serving process; the pid of the one that took over, once the old
    one has exited (or written it in the pidfile only, when it stays: `old_exits`)."""
    old = serving_pid(proxy)
    os.kill(old, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = pidfile_pid(proxy)
        if new not in (None, old) and not (old_exits and pid_alive(old)):
            proxy.daemon_pid = new  # stop() and cleanup() follow it
            return new
        time.sleep(0.05)
    pytest.fail(f"no handoff from {old} within {timeout} s:\n{proxy.stderr_text()[-3000:]}")


def failed_hand_over(proxy: Proxy, timeout: float = 20.0) -> int:
    """SIGUSR2 to the serving process when no successor can take over; its pid, once it
    has logged that it goes on serving."""
    old = serving_pid(proxy)
    os.kill(old, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while "this process serves on" not in proxy.stderr_text():
        assert time.monotonic() < deadline, proxy.stderr_text()[-3000:]
        time.sleep(0.05)
    return old


def udp_cmd(addr: tuple, text: str, timeout: float = 10.0) -> str:
    cookie = secrets.token_hex(6)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(f"{cookie} {text}".encode(), addr)
        reply = s.recv(65536).decode()
    assert reply.startswith(cookie + " "), reply
    return reply[len(cookie) + 1 :].rstrip("\n")


def unix_cmd(path: str, text: str, timeout: float = 10.0) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(text.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode().rstrip("\n")


class CommandLoad:
    """Q and V over UDP and the unix socket, back to back, from two threads: every
    command must get its answer (no retransmits)."""

    def __init__(self, udp: tuple, unix: str, queries: list[str]) -> None:
        self.udp, self.unix, self.queries = udp, unix, queries
        self.sent = self.answered = 0
        self.bad: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(udp_cmd, udp), daemon=True),
            threading.Thread(target=self._run, args=(unix_cmd, unix), daemon=True),
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def _run(self, send, where) -> None:
        rng = random.Random()
        while not self._stop.is_set():
            text = rng.choice(self.queries) if rng.random() < 0.8 else "V"
            self.sent += 1
            try:
                reply = send(where, text)
            except OSError as exc:
                self.bad.append(f"{text}: {exc!r}")
                continue
            self.answered += 1
            if reply.startswith("E"):
                self.bad.append(f"{text}: {reply}")
            time.sleep(0.01)


def read_lines(listener: Listener, count: int, timeout: float) -> list[str]:
    """`count` notification lines, over however many connections and reads."""
    deadline = time.monotonic() + timeout
    data = b""
    while data.count(b"\n") < count:
        left = deadline - time.monotonic()
        assert left > 0, f"notifications so far: {data!r}"
        data += listener.read_line(timeout=left)
    return data.decode().split()


def adhoc_rtp_seqs(path: Path) -> list[int]:
    return [struct.unpack_from("!H", rec.data, 2)[0] for rec in parse_adhoc(path)]


def test_five_handoffs_under_load_lose_nothing(rtpproxy, tmp_path):
    calls, recorded, timed_out = 200, range(0, 200, 20), range(5, 200, 40)
    tmp = Path(short_tmpdir())
    recdir = tmp / "rec"
    recdir.mkdir()
    prompt = tmp / "prompt"
    prompt.with_suffix(".0").write_bytes(bytes(range(256)) * 32)
    notify = Listener(socket.AF_UNIX, str(tmp / "notify.sock"))
    unix_path = str(tmp / "ctl.sock")
    udp_addr = ("127.0.0.1", free_udp_port())
    proxy = rtpproxy(
        "-l", "127.0.0.1",
        "-s", f"udp:{udp_addr[0]}:{udp_addr[1]}",
        "-s", f"unix:{unix_path}",
        "-r", str(recdir),
        "-n", f"unix:{tmp / 'notify.sock'}",
        "-T", "5",
        "-L", "8192",
        ports=port_span(6),
    )  # fmt: skip
    load = MediaLoad()
    pairs = []
    for i in range(calls):
        a, b = load.endpoint(0x10000 + i), load.endpoint(0x20000 + i)
        cid = f"call{i}"
        port_a = int(udp_cmd(udp_addr, f"U {cid} 127.0.0.1 {a.sock.getsockname()[1]} f{i} "
                             f"{tmp / 'notify.sock'} gone{i}").split()[0])  # fmt: skip
        port_b = int(udp_cmd(udp_addr, f"L {cid} 127.0.0.1 {b.sock.getsockname()[1]} f{i} t{i}")
                     .split()[0])  # fmt: skip
        a.dest, b.dest = ("127.0.0.1", port_b), ("127.0.0.1", port_a)
        pairs.append((cid, a, b))
    # A call without media: it times out during the handoffs, so the notification
    # sender is running (idle, connected) when the later ones pause it.
    udp_cmd(udp_addr, f"U early 127.0.0.1 4000 fe {tmp / 'notify.sock'} goneearly")
    udp_cmd(udp_addr, "L early 127.0.0.1 4002 fe te")
    for i in recorded:
        assert udp_cmd(udp_addr, f"R call{i} f{i} t{i}") == "0"
    load.start()
    time.sleep(1.0)
    assert udp_cmd(udp_addr, f"P-1 call7 {prompt} 0 f7 t7") == "0"
    queries = [f"Q {cid} f{i} t{i}" for i, (cid, _, _) in enumerate(pairs)]
    time.sleep(1.0)
    before = [udp_cmd(udp_addr, q) for q in queries]
    commands = CommandLoad(udp_addr, unix_path, queries)
    commands.start()
    pids = [serving_pid(proxy)]
    try:
        for k in range(5):
            if k == 3:  # the later handoffs pause a connected, idle notification sender
                deadline = time.monotonic() + 15
                while udp_cmd(udp_addr, "Q early fe te") != "E50":
                    assert time.monotonic() < deadline, "the media-less call did not time out"
                    time.sleep(0.2)
            pids.append(hand_over(proxy))
            time.sleep(0.5)
    finally:
        commands.stop()
    after = [udp_cmd(udp_addr, q) for q in queries]
    for i in timed_out:  # both parties hang up without a BYE: the session times out
        pairs[i][1].sending = pairs[i][2].sending = False
    gone = read_lines(notify, len(timed_out) + 1, timeout=15.0)
    assert sorted(gone) == sorted(["goneearly"] + [f"gone{i}" for i in timed_out])
    for i in recorded:  # the recorded calls end: their files are complete
        pairs[i][1].sending = pairs[i][2].sending = False
    time.sleep(0.5)
    for i in recorded:
        assert udp_cmd(udp_addr, f"D call{i} f{i} t{i}") == "0"
    load.stop_sending(settle_s=1.0)
    log = proxy.stderr_text()
    try:
        assert len(set(pids)) == 6, pids
        assert log.count("live handoff done") == 5, log[-3000:]
        assert commands.sent > 50 and commands.answered == commands.sent, commands.bad[:5]
        assert not commands.bad, commands.bad[:5]
        for i, (q0, q1) in enumerate(zip(before, after, strict=True)):
            ttl0, *n0 = map(int, q0.split())
            ttl1, *n1 = map(int, q1.split())
            assert n1[0] > n0[0] and n1[1] > n0[1], (i, q0, q1)  # npkts_ina, npkts_ino
        lost = dups = 0
        for i, (_, a, b) in enumerate(pairs):
            for src, dst in ((a, b), (b, a)):
                if i == 7 and dst is a:
                    continue  # the caller hears the prompt, not the callee
                got, dup = dst.received_from(src.ssrc)
                lost += src.nsent - got
                dups += dup
        assert (lost, dups) == (0, 0)
        player = [ssrc for ssrc in pairs[7][1].got if ssrc != pairs[7][2].ssrc]
        assert len(player) == 1, "one prompt stream, one SSRC, through five handoffs"
        entry = pairs[7][1].got[player[0]]
        bitmap, unique, pdups = entry[0], entry[1], entry[2]
        assert pdups == 0 and unique > 5 * 40
        seqs = [n for n in range(65536) if bitmap[n >> 3] & (1 << (n & 7))]
        span = (seqs[-1] - seqs[0]) if seqs[-1] - seqs[0] < 60000 else None
        assert span is None or span + 1 == unique, "the prompt went on without a gap"
        for i in recorded:
            a = pairs[i][1]
            files = sorted(recdir.glob(f"call{i}=f{i}*.o.rtp"))
            assert len(files) == 1, files
            seqs = adhoc_rtp_seqs(files[0])
            assert seqs == list(range(a.nsent)), f"call{i}: one continuous recording"
    except AssertionError:
        print(log[-5000:])
        raise
    finally:
        print("\n".join(ln for ln in log.splitlines() if "live handoff done" in ln))
        load.close()


# ------------------------------------------------------------------ failed handoffs

REPO = Path(__file__).resolve().parents[2]
PY = os.environ.get("PYTHON_FOR_SCRIPTS", "") or __import__("sys").executable

SUCCESSORS = {
    # A file that is no program at all (as a half-written upgrade could leave it).
    "garbage": None,
    "exits_before_ready": "import time\ntime.sleep(0.5)\nraise SystemExit(0)\n",
    "crashes_before_ready": "raise RuntimeError('broken build')\n",
    "never_answers": "import time\ntime.sleep(60)\n",
    # An older version on disk (a downgrade): it reads only formats older than ours.
    "older_reader": (
        "import os, sys\n"
        f"sys.path.insert(0, {str(REPO / 'lib')!r})\n"
        "from rtpp.handoff.channel import Channel\n"
        "from rtpp.handoff import state\n"
        "ch = Channel.from_fd(int(os.environ['RTPP_HANDOFF_FD']))\n"
        "ch.send('HELLO', {'pid': os.getpid(), 'version': '3.1', "
        "'reads': [0, 0]})\n"
        "ch.recv(10)\n"
    ),
    # Takes the state, then dies: the old process had stopped reading and must resume.
    "dies_after_state": (
        "import os, sys\n"
        f"sys.path.insert(0, {str(REPO / 'lib')!r})\n"
        "from rtpp.handoff.channel import Channel\n"
        "from rtpp.handoff import state\n"
        "ch = Channel.from_fd(int(os.environ['RTPP_HANDOFF_FD']))\n"
        "ch.send('HELLO', {'pid': os.getpid(), 'version': '9', "
        "'reads': [state.OLDEST_READABLE, state.FORMAT]})\n"
        "msg = ch.recv(10)\n"
        "assert msg.kind == 'STATE' and msg.fds\n"
        "os._exit(3)\n"
    ),
}
EXPECTED = {
    "garbage": ("can't start", "exited with status 1 before it was ready"),
    "exits_before_ready": ("exited with status 0 before it was ready",),
    "crashes_before_ready": ("exited with status 1 before it was ready",),
    "never_answers": ("no HELLO from the new process within 2 s",),
    "older_reader": ("(version 3.1) reads state formats 0-0, this process writes 1",),
    "dies_after_state": ("exited with status 3 before it was ready",),
}


def copy_of_executable(tmp: Path) -> tuple[list[str], Path]:
    """A private copy of the program (to be replaced), and the command that runs it."""
    binary = os.environ.get("RTPP_BIN")
    if binary:
        path = tmp / "rtpproxy"
        path.write_bytes(Path(binary).read_bytes())
        path.chmod(0o755)
        return [str(path)], path
    path = tmp / "rtpproxy.py"
    path.write_text((REPO / "rtpproxy.py").read_text())
    (tmp / "lib").symlink_to(REPO / "lib")
    return [PY, str(path)], path


def replace_file(path: Path, content: bytes) -> None:
    """As a package upgrade does: a new file renamed over the old name."""
    new = path.with_name(path.name + ".new")
    new.write_bytes(content)
    new.chmod(0o755)
    os.replace(new, path)


@pytest.mark.parametrize("case", sorted(SUCCESSORS))
def test_failed_handoff_leaves_the_old_process_serving(rtpproxy, case):
    tmp = Path(short_tmpdir())
    command, path = copy_of_executable(tmp)
    proxy = rtpproxy(
        "-l", "127.0.0.1", command=command, extra_env={"RTPP_HANDOFF_TIMEOUT": "2"}
    )  # fmt: skip
    load = MediaLoad()
    a, b = load.endpoint(0x1111), load.endpoint(0x2222)
    port_a = int(proxy.cmd(f"U fail 127.0.0.1 {a.sock.getsockname()[1]} fa").split()[0])
    port_b = int(proxy.cmd(f"L fail 127.0.0.1 {b.sock.getsockname()[1]} fa tb").split()[0])
    a.dest, b.dest = ("127.0.0.1", port_b), ("127.0.0.1", port_a)
    script = SUCCESSORS[case]
    content = os.urandom(4096) if script is None else f"#!{PY}\n{script}".encode()
    replace_file(path, content)
    load.start()
    try:
        time.sleep(0.5)
        old = failed_hand_over(proxy)
        time.sleep(0.5)
        assert proxy.cmd("V") == "20040107"
        assert serving_pid(proxy) == old and proxy.alive()
        load.stop_sending(settle_s=0.5)
    finally:
        load.close()
    lines = [ln for ln in proxy.stderr_text().splitlines() if "serves on" in ln]
    assert len(lines) == 1, lines
    assert any(text in lines[0] for text in EXPECTED[case]), lines[0]
    for src, dst in ((a, b), (b, a)):
        assert dst.received_from(src.ssrc) == (src.nsent, 0), case
    assert a.nsent > 40
    assert not [p for p in child_pids_of_group(old) if p != old], "the successor is gone"


def test_a_successor_refusing_the_edited_configuration_leaves_the_old_process_serving(rtpproxy):
    """The real program as successor, its --config file broken since the start: it
    refuses to start, the old process serves on with the same calls."""
    config = Path(short_tmpdir()) / "rtpproxy.conf"
    config.write_text("# nothing to load\n")
    proxy = rtpproxy("-l", "127.0.0.1", "--config", str(config))
    call = kamailio_call(proxy)
    config.write_text("modules {\n  acct_csv {\n  }\n")  # unbalanced: unparsable
    old = failed_hand_over(proxy)
    assert "line 4: missing '}'" in proxy.stderr_text()  # the successor says why
    lines = [ln for ln in proxy.stderr_text().splitlines() if "serves on" in ln]
    assert len(lines) == 1 and "exited with status 1 before it was ready" in lines[0], lines
    pkt = rtp(1, 160, 0x99, b"k" * 160)
    assert call.a_to_b(pkt)[0] == pkt and call.b_to_a(pkt)[0] == pkt
    assert serving_pid(proxy) == old and proxy.cmd(f"Q {call.call_id} ftag;1 ttag;1")[0] != "E"


def child_pids_of_group(pid: int) -> list[int]:
    """Processes whose parent is `pid` (a successor left behind would be one)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] not in "ZX":
                found.append(int(entry))
    return found


def test_a_persistent_connection_and_its_partial_line_carry_over(rtpproxy):
    tmp = Path(short_tmpdir())
    path = str(tmp / "c.sock")
    proxy = rtpproxy("-s", f"cunix:{path}", "-s", f"udp:127.0.0.1:{free_udp_port()}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(path)
        conn.sendall(b"G ncmds_rcvd\n")
        first = int(conn.recv(100).decode())
        conn.sendall(b"Q nosuch fta")  # half a command, read by the old process
        time.sleep(0.2)
        hand_over(proxy)
        conn.sendall(b"g ttb\nG ncmds_rcvd\n")
        data = b""
        while data.count(b"\n") < 2:
            data += conn.recv(100)
    assert data.split(b"\n")[:2] == [b"E50", str(first + 2).encode()]
    assert os.path.exists(path)  # the old process left the socket file to the new one
    proxy.stop()
    assert not os.path.exists(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges (-u) needs root")
def test_an_unprivileged_daemon_hands_over_pidfile_and_socket_ownership(rtpproxy):
    """Started as root with -u: the successor runs as that user from the start, needs
    no privilege, and still rewrites the root-owned pidfile (through the descriptor the
    old process kept) and keeps the socket's owner and mode."""
    program = Path(rtpproxy_command()[0]).resolve()
    if not all(p.stat().st_mode & 0o001 for p in program.parents):
        pytest.skip(f"user nobody cannot run {program} (a directory above it is private)")
    tmp = Path(short_tmpdir())
    tmp.chmod(0o755)
    path = tmp / "c.sock"
    pidfile = tmp / "pid"
    proxy = rtpproxy(
        "-u", "nobody:nogroup", "-w", "432",  # 432 = 0660 (decimal, as in the classic)
        "-s", f"unix:{path}", "-s", f"udp:127.0.0.1:{free_udp_port()}", "-p", str(pidfile),
    )  # fmt: skip
    before = path.stat()
    old = hand_over(proxy)
    new = hand_over(proxy)
    status = Path(f"/proc/{new}/status").read_text()
    assert re.search(r"^Uid:\s+65534\s", status, re.M), status
    assert int(pidfile.read_text()) == new != old
    assert pidfile.stat().st_uid == 0  # rewritten in place, not replaced
    after = path.stat()
    assert (after.st_uid, after.st_gid, after.st_mode) == (
        before.st_uid,
        before.st_gid,
        before.st_mode,
    )
    assert oct(after.st_mode & 0o777) == "0o660"
    assert unix_cmd(str(path), "V") == "20040107"


def test_sigterm_during_a_handoff_stops_both_processes(rtpproxy):
    """SIGUSR2 again is ignored while one runs; SIGTERM ends the successor, then us."""
    tmp = Path(short_tmpdir())
    command, path = copy_of_executable(tmp)
    proxy = rtpproxy(command=command)
    marker = tmp / "successor.pid"
    script = (
        f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    )
    replace_file(path, f"#!{PY}\n{script}".encode())
    old = serving_pid(proxy)
    os.kill(old, signal.SIGUSR2)
    deadline = time.monotonic() + 10
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline, proxy.stderr_text()
        time.sleep(0.05)
    successor = int(marker.read_text())
    os.kill(old, signal.SIGUSR2)
    time.sleep(0.3)
    assert proxy.stop(signal.SIGTERM) == 0
    assert "while a live handoff is under way: ignored" in proxy.stderr_text()
    assert not pid_alive(successor)


def test_the_greenlet_driver_hands_over_too(rtpproxy):
    proxy = rtpproxy("-l", "127.0.0.1", extra_env={"RTPP_RELAY": "greenlet"})
    load = MediaLoad()
    pairs = []
    for i in range(10):
        a, b = load.endpoint(0x3000 + i), load.endpoint(0x4000 + i)
        port_a = int(proxy.cmd(f"U g{i} 127.0.0.1 {a.sock.getsockname()[1]} fa").split()[0])
        port_b = int(proxy.cmd(f"L g{i} 127.0.0.1 {b.sock.getsockname()[1]} fa tb").split()[0])
        a.dest, b.dest = ("127.0.0.1", port_b), ("127.0.0.1", port_a)
        pairs.append((a, b))
    load.start()
    try:
        time.sleep(0.5)
        hand_over(proxy)
        time.sleep(0.3)
        hand_over(proxy)
        time.sleep(0.5)
        load.stop_sending(settle_s=0.5)
    finally:
        load.close()
    for a, b in pairs:
        for src, dst in ((a, b), (b, a)):
            assert dst.received_from(src.ssrc) == (src.nsent, 0)
    assert proxy.cmd("I").count("\n") >= 4
    assert proxy.stderr_text().count("live handoff done") == 2


def test_a_session_mirror_keeps_copying_through_handoffs(rtpproxy):
    """`U ... && C`: both directions of one call copied out of another session's ports
    go on, every packet once, through two handoffs; a mirror into a session that has
    ended no longer holds one up."""
    proxy = rtpproxy("-l", "127.0.0.1")
    load = MediaLoad()

    def session(call_id: str, ssrc: int) -> tuple:
        a, b = load.endpoint(ssrc), load.endpoint(ssrc + 1)
        port_a = int(proxy.cmd(f"U {call_id} 127.0.0.1 {a.sock.getsockname()[1]} fa").split()[0])
        port_b = int(proxy.cmd(f"L {call_id} 127.0.0.1 {b.sock.getsockname()[1]} fa tb").split()[0])
        a.dest, b.dest = ("127.0.0.1", port_b), ("127.0.0.1", port_a)
        return a, b

    a, b = session("talk", 0x5000)
    tap_a, tap_b = session("tap", 0x6000)
    tap_port = tap_a.sock.getsockname()[1]
    reply = proxy.cmd(f"U tap 127.0.0.1 {tap_port} fa tb && C talk fa tb")
    assert reply == f"{tap_b.dest[1]} 127.0.0.1"
    tap_a.sending = tap_b.sending = False
    load.start()
    try:
        for _ in range(2):
            time.sleep(0.5)
            hand_over(proxy)
        time.sleep(0.5)
        copied = {src: src.nsent for src in (a, b)}  # all copied well before the D
        time.sleep(0.3)
        assert proxy.cmd("D tap fa tb") == "0"
        hand_over(proxy)
        time.sleep(0.5)
        load.stop_sending(settle_s=0.5)
    finally:
        load.close()
    for src, dst, tap in ((a, b, tap_a), (b, a, tap_b)):
        assert dst.received_from(src.ssrc) == (src.nsent, 0)
        bitmap, unique, dups, _ = tap.got[src.ssrc]
        assert dups == 0 and copied[src] <= unique < src.nsent
        assert all(bitmap[n >> 3] & (1 << (n & 7)) for n in range(unique)), "a gap in the copy"
    assert "refused" not in proxy.stderr_text()
    assert proxy.stderr_text().count("live handoff done") == 3
