"""A call through a daemon in another network namespace (run there with nsenter --net).

    call_helper.py CONTROL_SOCKET

Sets a call up over the unix control socket, prints "ready", sends RTP both ways at
50 packets a second until a line arrives on stdin, then prints one JSON line: per
direction, packets sent, received and duplicated.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from integration.media_load import MediaLoad  # noqa: E402


def command(path: str, text: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(text.encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.decode().strip()


def main() -> int:
    path = sys.argv[1]
    load = MediaLoad()
    a, b = load.endpoint(0xA1), load.endpoint(0xB2)
    port_a = int(command(path, f"U upg 127.0.0.1 {a.sock.getsockname()[1]} fa").split()[0])
    port_b = int(command(path, f"L upg 127.0.0.1 {b.sock.getsockname()[1]} fa tb").split()[0])
    a.dest, b.dest = ("127.0.0.1", port_b), ("127.0.0.1", port_a)
    load.start()
    print("ready", flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    stop.wait()
    load.stop_sending(settle_s=1.0)
    query = command(path, "Q upg fa tb")
    result = {
        "a_to_b": [a.nsent, *b.received_from(a.ssrc)],
        "b_to_a": [b.nsent, *a.received_from(b.ssrc)],
        "query": query,
    }
    load.close()
    time.sleep(0.1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
