"""Runs rtpp.media.kernel.KernelOffload in the namespace it is started in, driven by
JSON requests on standard input, one JSON reply line each (tests/kernel)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib"))

from rtpp.media.kernel import KernelOffload, Leg  # noqa: E402


def leg(pair: list) -> Leg:
    return Leg(tuple(pair[0]), tuple(pair[1]))


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def main() -> None:
    engine = None
    for line in sys.stdin:
        req = json.loads(line)
        op = req.pop("op")
        try:
            reply: dict = {}
            if op == "open":
                locals_ = [
                    (socket.AF_INET6 if ":" in h else socket.AF_INET, h) for h in req["hosts"]
                ]
                engine = KernelOffload.open(req["table"], req["low"], req["high"], locals_)
                reply["ok"] = engine is not None
            elif op == "bind":
                reply["ok"] = engine.bind(req["key"], leg(req["a"]), leg(req["b"]))
            elif op == "unbind":
                engine.unbind(req["key"])
            elif op == "commit":
                engine.commit()
                reply["bound"] = sorted(engine.live)
            elif op == "read":
                reply["counts"] = {k: list(v) for k, v in engine.read_counters().items()}
            elif op == "elements":
                reply["n"] = engine.element_count()
            elif op == "close":
                engine.close()
        except Exception as exc:
            reply = {"error": repr(exc)}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
