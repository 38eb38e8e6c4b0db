"""Control-command inputs for the fuzzer: valid commands of every letter, then mutated.

`InputGen(seed).next()` returns one command body (bytes, without UDP cookie). A share
is a valid command from the templates below, most are mutations of one (token swaps,
drops, duplicates, over-long tokens, NULs, `&&` chains, case flips, byte flips), and
some are random bytes.
"""

from __future__ import annotations

import random

CALL_IDS = [f"fz{i}@h" for i in range(48)]
TAGS = ["ft;1", "tt;1", "ft;2", "tt;2", "a", "b", "x%41;3"]
ADDRS = ["127.0.0.1", "127.0.0.1", "0.0.0.0", "::1", "192.0.2.1", "1.2.3", "::", "fe80::1%lo"]
PORTS = ["4000", "5004", "0", "65535", "70000", "-1", "abc", "1", "6000", "6001"]
UL_MODS = ["", "", "a", "s", "w", "n", "6", "c0,8,101", "z20", "l127.0.0.1", "r127.0.0.1"]
UL_MODS += ["e", "ie", "x", "AS", "c0", "z", "l", "lbad", "c0,8z30", "I", "6c8"]
STAT_NAMES = ["nsess_created", "npkts_rcvd", "ncmds_rcvd", "pps_in", "total_duration", "zz"]
Q_NAMES = ["npkts_ina", "npkts_ino", "ttl", "rtpa_nlost", "rtpa_jitter_avg", "bogus"]

TEMPLATES: list[tuple[int, str]] = [
    (2, "V"),
    (2, "VF {date}"),
    (8, "U{um} {cid} {addr} {port} {ft}"),
    (8, "U{um} {cid} {addr} {port} {ft} {tt}"),
    (3, "U{um} {cid} {addr} {port} {ft} {tt} {nsock} {ntag}"),
    (8, "L{um} {cid} {addr} {port} {ft} {tt}"),
    (4, "D{dm} {cid} {ft}"),
    (4, "D{dm} {cid} {ft} {tt}"),
    (2, "P{pn} {cid} {prompt} {codecs} {ft} {tt}"),
    (2, "S {cid} {ft} {tt}"),
    (2, "R{rm} {cid} {ft} {tt}"),
    (2, "C{cm} {cid} udp:127.0.0.1:9 {ft} {tt}"),
    (2, "N{nm} {cid} {ft} {tt}"),
    (4, "Q{qm} {cid} {ft} {tt}"),
    (2, "Q{qm} {cid} {ft} {tt} {qnames}"),
    (2, "G{gm}"),
    (2, "G{gm} {gnames}"),
    (1, "I"),
    (1, "I{im}"),
    (3, "U {cid} {addr} {port} {ft} {tt} && L{um} {addr} {port} && S ttl={ttl}"),
    (2, "U {cid} {addr} {port} {ft} {tt} && C {cid} {ft} {tt} && Sr tos=16 && D"),
    (2, "Q {cid} {ft} {tt} && S ttl={ttl}"),
    (1, "L {cid} {addr} {port} {ft} {tt} && D"),
]
WEIGHTED = [t for w, t in TEMPLATES for _ in range(w)]

SEPARATORS = [b" ", b" ", b" ", b"\t", b"\r", b"  ", b" \t "]
NASTY_TOKENS = [
    b"&&",
    b"&",
    b"\x00",
    b"%",
    b"%zz",
    b"%00",
    b"ttl=",
    b"ttl=-1",
    b"ttl=99999999999999999999999",
    b"tos=256",
    b"udp:",
    b"udp:127.0.0.1:0",
    b"udp:[::1]:9",
    b"unix:",
    b"../../etc/passwd",
    b"/dev/null",
    b"\xff\xfe",
    b"\xc3\xa9",
    b"9" * 40,
    b"-" * 3,
    b"+1",
    b"0x10",
]


class InputGen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    # -- valid commands

    def valid(self) -> bytes:
        r = self.rng
        template = r.choice(WEIGHTED)
        if r.random() < 0.01:
            template = "X"
        text = template.format(
            cid=r.choice(CALL_IDS),
            ft=r.choice(TAGS),
            tt=r.choice(TAGS),
            addr=r.choice(ADDRS),
            port=r.choice(PORTS),
            um=r.choice(UL_MODS),
            dm=r.choice(["", "w", "W", "x"]),
            pn=r.choice(["", "1", "3", "x"]),
            prompt=r.choice(["/nonexistent", "prompt", "../x"]),
            codecs=r.choice(["0", "8", "session", "0,8"]),
            rm=r.choice(["", "s", "q"]),
            cm=r.choice(["", "s", "p", "sp", "z"]),
            nm=r.choice(["", "a", "b"]),
            qm=r.choice(["", "v", "V", "x"]),
            gm=r.choice(["", "v", "x"]),
            im=r.choice(["b", "l", "bl", "x"]),
            date=r.choice(["20040107", "20081224", "20150617", "19990101", "abc"]),
            nsock=r.choice(["unix:/nonexistent.sock", "/nonexistent.sock", "tcp:1.2.3.4:9"]),
            ntag=r.choice(["t1", "a%0Ab", "%zz", "+x+", "T%41"]),
            ttl=r.choice(["1", "5", "0", "-3", "60"]),
            qnames=" ".join(r.sample(Q_NAMES, r.randint(1, len(Q_NAMES)))),
            gnames=" ".join(r.sample(STAT_NAMES, r.randint(1, len(STAT_NAMES)))),
        )
        if r.random() < 0.5:
            text = text.lower() if r.random() < 0.5 else text
        return text.encode()

    # -- mutations

    def token(self) -> bytes:
        r = self.rng
        roll = r.random()
        if roll < 0.35:
            return r.choice(NASTY_TOKENS)
        if roll < 0.55:
            return bytes(r.randrange(33, 127) for _ in range(r.randint(1, 12)))
        if roll < 0.65:
            return r.choice([b"a", b"9", b"\xff", b"&"]) * r.choice([100, 1000, 4000, 7000])
        if roll < 0.85:
            return r.choice(CALL_IDS + TAGS + ADDRS + PORTS).encode()
        return bytes(r.randrange(1, 256) for _ in range(r.randint(1, 8)))

    def mutate(self, data: bytes) -> bytes:
        r = self.rng
        tokens = data.split()
        for _ in range(r.randint(1, 4)):
            op = r.randrange(12)
            if op == 0 and tokens:
                del tokens[r.randrange(len(tokens))]
            elif op == 1 and tokens:
                i = r.randrange(len(tokens))
                tokens.insert(i, tokens[i])
            elif op == 2 and len(tokens) > 1:
                i, j = r.randrange(len(tokens)), r.randrange(len(tokens))
                tokens[i], tokens[j] = tokens[j], tokens[i]
            elif op == 3:
                tokens.insert(r.randint(0, len(tokens)), self.token())
            elif op == 4 and tokens:
                tokens[r.randrange(len(tokens))] = self.token()
            elif op == 5:
                tokens.insert(r.randint(0, len(tokens)), b"&&")
            elif op == 6:
                tokens += [b"&&", self.valid()]
            elif op == 7 and tokens:
                i = r.randrange(len(tokens))
                tokens[i] = tokens[i] + self.token()
            elif op == 8:
                tokens += [b"x"] * r.choice([5, 20, 22, 23, 24, 40])
            elif op == 9:
                tokens += [b"&&", b"S", b"ttl=1"] * r.choice([3, 14, 15, 16, 20])
            elif op == 10 and tokens:
                i = r.randrange(len(tokens))
                tokens[i] = tokens[i].swapcase()
            elif op == 11:
                tokens.insert(r.randint(0, len(tokens)), b"\x00")
        out = bytearray(self.join(tokens))
        if out and r.random() < 0.2:
            for _ in range(r.randint(1, 3)):
                out[r.randrange(len(out))] = r.randrange(256)
        return bytes(out)

    def join(self, tokens: list[bytes]) -> bytes:
        r = self.rng
        out = b"".join(t + r.choice(SEPARATORS) for t in tokens)
        if r.random() < 0.1:
            out = r.choice(SEPARATORS) + out
        return out

    def random_bytes(self) -> bytes:
        r = self.rng
        return bytes(r.randrange(256) for _ in range(r.randint(0, r.choice([8, 64, 512]))))

    def next(self) -> bytes:
        roll = self.rng.random()
        if roll < 0.3:
            return self.valid()
        if roll < 0.9:
            return self.mutate(self.valid())
        return self.random_bytes()
