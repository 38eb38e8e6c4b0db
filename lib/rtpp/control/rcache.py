"""Cookie -> reply cache for UDP retransmits (mirrors the classic rcache).

Entries expire 35 s after insertion and are swept every 3 s, so an entry lives
between 35 and 38 s. `now` is a monotonic time supplied by the caller.

The cache is also bounded in memory (`max_bytes`): a flood of unique cookies (up to
8 KB each, and the reply repeats the cookie) would otherwise hold hundreds of MB for
35 s. Over the bound the oldest entries go first; retransmits come within seconds.
"""

from __future__ import annotations

from collections import OrderedDict

from rtpp import memory

ENTRY_TTL_S = 35.0
SWEEP_INTERVAL_S = 3.0
MAX_BYTES = 32 * 1024 * 1024
#: rough per-entry cost of the dict slot, tuple and two bytes objects
ENTRY_OVERHEAD = 200
#: a table that held this many entries and is down to a quarter is rebuilt smaller
SHRINK_FROM = 4096


class ReplyCache:
    def __init__(
        self,
        ttl_s: float = ENTRY_TTL_S,
        sweep_s: float = SWEEP_INTERVAL_S,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.ttl_s = ttl_s
        self.sweep_s = sweep_s
        self.max_bytes = max_bytes
        self.nbytes = 0
        # Insertion order == expiry order, so a sweep stops at the first live entry.
        self._entries: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self._next_sweep: float | None = None
        self._peak = 0  # most entries held since the table was last rebuilt

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, cookie: bytes, now: float) -> bytes | None:
        self.maybe_sweep(now)
        entry = self._entries.get(cookie)
        return None if entry is None else entry[1]

    def insert(self, cookie: bytes, reply: bytes, now: float) -> None:
        self.maybe_sweep(now)
        old = self._entries.pop(cookie, None)
        if old is not None:
            self.nbytes -= _cost(cookie, old[1])
        self._entries[cookie] = (now + self.ttl_s, reply)
        self.nbytes += _cost(cookie, reply)
        while self.nbytes > self.max_bytes and len(self._entries) > 1:
            self._pop_oldest()
        if len(self._entries) > self._peak:
            self._peak = len(self._entries)

    def maybe_sweep(self, now: float) -> None:
        if self._next_sweep is None:
            self._next_sweep = now + self.sweep_s
        if now >= self._next_sweep:
            self.sweep(now)
            self._next_sweep = now + self.sweep_s

    def sweep(self, now: float) -> None:
        while self._entries:
            _, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                break
            self._pop_oldest()
        self._shrink()

    def _shrink(self) -> None:
        """After a burst, give the table's memory back: a dict never shrinks by itself,
        and the process would keep the burst's peak for good."""
        if self._peak < SHRINK_FROM or len(self._entries) * 4 > self._peak:
            return
        self._entries = OrderedDict(self._entries)
        self._peak = len(self._entries)
        memory.trim()

    def entries(self) -> list[tuple[bytes, float, bytes]]:
        """(cookie, expiry, reply), oldest first: for the next process of a live handoff
        (monotonic times hold across processes of one boot)."""
        return [(cookie, expires, reply) for cookie, (expires, reply) in self._entries.items()]

    def load(self, entries: list[tuple[bytes, float, bytes]]) -> None:
        """Take over `entries()` of the previous process."""
        for cookie, expires, reply in entries:
            self._entries[cookie] = (expires, reply)
            self.nbytes += _cost(cookie, reply)
        self._peak = max(self._peak, len(self._entries))

    def _pop_oldest(self) -> None:
        cookie, (_, reply) = self._entries.popitem(last=False)
        self.nbytes -= _cost(cookie, reply)


def _cost(cookie: bytes, reply: bytes) -> int:
    return len(cookie) + len(reply) + ENTRY_OVERHEAD
