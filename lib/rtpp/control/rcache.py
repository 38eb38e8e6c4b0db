"""Cookie -> reply cache for UDP retransmits (mirrors the classic rcache).

Entries expire 35 s after insertion and are swept every 3 s, so an entry lives
between 35 and 38 s. `now` is a monotonic time supplied by the caller.
"""

from __future__ import annotations

from collections import OrderedDict

ENTRY_TTL_S = 35.0
SWEEP_INTERVAL_S = 3.0


class ReplyCache:
    def __init__(self, ttl_s: float = ENTRY_TTL_S, sweep_s: float = SWEEP_INTERVAL_S) -> None:
        self.ttl_s = ttl_s
        self.sweep_s = sweep_s
        # Insertion order == expiry order, so a sweep stops at the first live entry.
        self._entries: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self._next_sweep: float | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, cookie: bytes, now: float) -> bytes | None:
        self.maybe_sweep(now)
        entry = self._entries.get(cookie)
        return None if entry is None else entry[1]

    def insert(self, cookie: bytes, reply: bytes, now: float) -> None:
        self.maybe_sweep(now)
        self._entries.pop(cookie, None)
        self._entries[cookie] = (now + self.ttl_s, reply)

    def maybe_sweep(self, now: float) -> None:
        if self._next_sweep is None:
            self._next_sweep = now + self.sweep_s
        if now >= self._next_sweep:
            self.sweep(now)
            self._next_sweep = now + self.sweep_s

    def sweep(self, now: float) -> None:
        while self._entries:
            cookie, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                break
            del self._entries[cookie]
