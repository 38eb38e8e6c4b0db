#!/usr/bin/env python3
"""The floor of the CPU comparison: no relay at all.

It answers bench/loadgen's control commands so that every call's media goes straight
from caller to callee and back: U is answered with the caller's own address (where
the callee then sends), L with the callee's. loadgen must run with --direct, which
lets a reply name the requester's own endpoint. D, V and VF are answered as a relay
would. Nothing else runs: during the measured window this process only sleeps.

Usage: direct_ctl.py --ctl 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from collections.abc import Callable


def answer(line: bytes, media: Callable[[bytes, list[bytes]], bytes | None] | None = None):
    """The reply (cookie included) to one control datagram. `media(letter, args)` answers
    U and L (None: E1); without it, with the requester's own address."""
    parts = line.split()
    if len(parts) < 2:
        return None
    cookie, cmd, args = parts[0], parts[1], parts[2:]
    letter = cmd[:1].upper()
    body: bytes | None = b"E1"
    if letter == b"V":
        body = b"1" if cmd.upper() == b"VF" else b"20040107"
    elif letter in (b"U", b"L") and len(args) >= 3:
        # <port> <addr>: the requester's own
        body = media(letter, args) if media is not None else args[2] + b" " + args[1]
    elif letter == b"D":
        body = b"0"
    return cookie + b" " + (body or b"E1") + b"\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ctl", required=True, help="IP:PORT")
    args = ap.parse_args(argv)
    host, _, port = args.ctl.rpartition(":")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, int(port)))
        while True:
            data, peer = sock.recvfrom(4096)
            reply = answer(data)
            if reply is not None:
                sock.sendto(reply, peer)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
