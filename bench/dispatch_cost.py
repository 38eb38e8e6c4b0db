"""Where the relay's per-packet CPU goes: the dispatcher against stripped-down variants.

Runs in one process without the event loop: it sets up N calls through `App.execute`,
sends one RTP packet per call into the proxy's sockets, calls the epoll dispatcher
directly and charges the process CPU time of that call to the packets it relayed.
The same sockets are then driven by variants that leave parts out, so the difference
between two lines is the cost of one piece. Usage: `python bench/dispatch_cost.py [N]`.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import itertools  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import gevent  # noqa: E402

from rtpp.app import App  # noqa: E402
from rtpp.config import Config, ListenAddr  # noqa: E402
from rtpp.control.peer import Peer  # noqa: E402
from rtpp.media.drivers import EpollDriver  # noqa: E402
from rtpp.media.relay import RECV  # noqa: E402

RTP = struct.Struct("!BBHII")
ROUNDS = 300


def raw_socket() -> socket.socket:
    sock = socket._socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # type: ignore[attr-defined]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
    sock.bind(("127.0.0.1", 0))
    return sock


def setup(calls: int) -> tuple[App, list[int], socket.socket, socket.socket]:
    config = Config(
        listen=(ListenAddr(socket.AF_INET, "127.0.0.1"),),
        port_min=30000,
        port_max=30000 + 8 * calls,
        ctrl_socks=(),
    )
    app = App(config)
    peer = Peer("udp", ("127.0.0.1", 1))
    caller, callee = raw_socket(), raw_socket()
    callee.setblocking(False)
    ports = []
    for i in range(calls):
        offer = app.execute(f"U c{i} 127.0.0.1 {caller.getsockname()[1]} f{i};1".encode(), peer)
        reply = app.execute(
            f"L c{i} 127.0.0.1 {callee.getsockname()[1]} f{i};1 t{i};1".encode(), peer
        )
        ports.append(int(reply.split()[0]))
        # One packet from the callee latches the callee's leg: both directions then
        # have connected twins, as in a real call.
        callee.sendto(RTP.pack(0x80, 0, 1, 160, 1 << 20 | i), ("127.0.0.1", int(offer.split()[0])))
    gevent.sleep(0.2)  # let the stream greenlets register their sockets, relay the above
    caller.setblocking(False)
    while True:
        try:
            caller.recv(2048)
        except BlockingIOError:
            break
    return app, ports, caller, callee


_seq = itertools.count()


def measure(dispatch, ports: list[int], caller, callee) -> float:
    """Process CPU microseconds per relayed packet."""
    cpu = 0.0
    relayed = 0
    for _ in range(ROUNDS):
        seq = next(_seq)  # in order across calls, as a real sender
        packets = [
            RTP.pack(0x80, 0, seq & 0xFFFF, seq * 160, i) + b"x" * 160 for i in range(len(ports))
        ]
        for packet, port in zip(packets, ports, strict=True):
            caller.sendto(packet, ("127.0.0.1", port))
        start = time.process_time()
        dispatch()
        dispatch()
        cpu += time.process_time() - start
        while True:
            try:
                callee.recv(2048)
            except BlockingIOError:
                break
            relayed += 1
    return cpu / max(relayed, 1) * 1e6


def variants(disp: EpollDriver) -> dict:
    # After the first packet every stream has latched, so packets arrive on the twins.
    streams, twins = disp.streams, disp.twins
    poll = disp.epoll.poll
    buf = view = RECV.packet

    def recv_sendto() -> None:
        for fd, _ in poll(0, 1024):
            st = twins[fd] or streams[fd]
            st.fwd(st.twin.recv(2048), st.fwd_dst)

    def recv_into_send() -> None:
        for fd, _ in poll(0, 1024):
            st = twins[fd] or streams[fd]
            n = st.twin.recv_into(buf)
            st.tfwd(view[:n])

    def counted_no_analyzer() -> None:
        for fd, _ in poll(0, 1024):
            st = twins[fd]
            if st is not None:
                n = st.twin.recv_into(buf)
                if st.fast_src is not None:
                    st.nfast_rtcp += 1
                    st.tfwd(view[:n])

    return {
        "recv + sendto (bare relay)": recv_sendto,
        "recv_into + send (connected twin)": recv_into_send,
        "+ state check, counter": counted_no_analyzer,
        "full dispatcher (+ RTP analyzer)": disp.dispatch,
    }


def main(argv: list[str]) -> int:
    calls = int(argv[1]) if len(argv) > 1 else 100
    app, ports, caller, callee = setup(calls)
    disp = app.media.driver
    assert isinstance(disp, EpollDriver)
    table = variants(disp)
    measure(disp.dispatch, ports, caller, callee)  # warm up
    print(f"{calls} calls, {ROUNDS} packets each, CPU us per relayed packet:")
    for name, dispatch in table.items():
        print(f"  {name:34s} {measure(dispatch, ports, caller, callee):6.2f}")
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
