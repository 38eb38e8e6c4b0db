"""The media plane in a live handoff: sessions and their sockets, latching state, TTLs,
counters, RTP analysis, recordings, copies, players, resizers and notifications.

Media sockets (and connected twins) are passed, not reopened, so what arrives during
the handoff waits in the kernel. Recordings continue into the same open files (the
old process writes out its buffers first). Players continue their schedule: times
are CLOCK_MONOTONIC, which every process of one boot shares.

A session mirror (`U ... && C`) is carried as the position of the stream its copy
leaves from; the new process links it once every session is back.

The old process: `refusal`, `quiesce` (stop reading, flush), `snapshot`, `resume`.
The new one: `restore` (its driver paused: nothing is read yet), then `activate`
after GO.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import fields
from typing import Any

import gevent

from rtpp.config import ListenAddr
from rtpp.handoff.protocol import IDLE_TIMEOUT_S, HandoffFailed
from rtpp.handoff.state import (
    FdSource,
    FdTable,
    decode,
    dump_fields,
    encode,
    load_fields,
    slot_names,
)
from rtpp.media.analyzer import RtpAnalyzer
from rtpp.media.notify import Target
from rtpp.media.playback.player import PromptSchedule
from rtpp.media.playback.resizer import Resizer, _Queued
from rtpp.media.recording.attach import RoutedLocal, SwappedRtcp
from rtpp.media.recording.copy import RemoteCopy, StreamMirror
from rtpp.media.recording.record import IP_ID, Recorder
from rtpp.media.rtp import RtpPacket
from rtpp.media.session import Session, Stream

log = logging.getLogger(__name__)

#: A session's own objects and identity; every other field is plain state (TTLs,
#: notification target and tag, counters' marks) and carries over as it is.
SESSION_OWN = frozenset(("call_id", "from_tag", "rtp", "rtcp", "deleted", "seq", "driver"))
SESSION_FIELDS = tuple(f.name for f in fields(Session) if f.name not in SESSION_OWN)
#: Everything else a stream holds is plain state (addresses, latching, counters, codecs).
STREAM_OWN = frozenset(
    (
        "session", "index", "is_rtp", "peer", "route",
        "fast_src", "fwd", "fwd_dst", "tfwd", "relay",  # routes: recomputed
        "sock", "twin", "twin_dst", "laddr",  # descriptors and the listen address
        "analyzer", "resizer", "recorder", "copier", "player",  # objects of their own
    )
)  # fmt: skip
STREAM_FIELDS = tuple(f.name for f in fields(Stream) if f.name not in STREAM_OWN)
ANALYZER_FIELDS = tuple(slot_names(RtpAnalyzer))
RESIZER_FIELDS = tuple(n for n in slot_names(Resizer) if n != "_queue")
PACKET_FIELDS = tuple(slot_names(RtpPacket))
SCHEDULE_FIELDS = (
    "prompt",
    "payload_type",
    "count",
    "ssrc",
    "seq0",
    "ts0",
    "start_s",
    "next_index",
    "packet_bytes",
    "duration_ms",
    "packets_per_loop",
    "total",
)
HANDED_KINDS = (Recorder, RoutedLocal, SwappedRtcp, RemoteCopy, StreamMirror)


def _streams(app):
    for sess in app.sessions:
        yield from sess.streams()


# ----------------------------------------------------------------- old process


def refusal(app) -> str | None:
    for st in _streams(app):
        for att in (st.recorder, st.copier):
            if att is not None and not isinstance(att, HANDED_KINDS):
                return f"session {st.session.call_id!r} has {att}, which cannot be handed over"
    return None


def quiesce(app) -> None:
    """Stop reading media and sending prompts; write out every recording buffer."""
    app.media.driver.pause()
    for st in _streams(app):
        if st.player is not None:
            st.player.pause()
    _quiesce_notifier(app.notifier)
    for rec in _recorders(app):
        rec.flush()
    if not app.media.recording.writer.drain(IDLE_TIMEOUT_S * 2):
        raise HandoffFailed("the recordings' disk writes did not finish in time")


def _quiesce_notifier(notifier) -> None:
    deadline = gevent.get_hub().loop.now() + IDLE_TIMEOUT_S
    for target in notifier.targets.values():
        while target.greenlet is not None and not target.greenlet.dead:
            if target.sending is None:  # waiting for work: nothing is lost
                target.greenlet.kill(block=True)
                break
            if gevent.get_hub().loop.now() > deadline:
                raise HandoffFailed(f"a timeout notification to {target.address} is under way")
            gevent.sleep(0.01)
        target.greenlet = None


def resume(app) -> None:
    app.media.driver.resume()
    for st in _streams(app):
        if st.player is not None:
            st.player.resume()
    _resume_notifier(app.notifier)


def _resume_notifier(notifier) -> None:
    for target in notifier.targets.values():
        if target.queue.qsize() and (target.greenlet is None or target.greenlet.dead):
            target.greenlet = gevent.spawn(target._send_loop)


def _recorders(app) -> list[Recorder]:
    found: dict[int, Recorder] = {}
    for st in _streams(app):
        for att in (st.recorder, st.copier):
            rec = _underlying(att)
            if rec is not None:
                found[id(rec)] = rec
    return list(found.values())


def _underlying(att) -> Recorder | None:
    if isinstance(att, RoutedLocal | SwappedRtcp):
        return att.recorder
    return att if isinstance(att, Recorder) else None


def snapshot(app, fds: FdTable) -> dict:
    recorders: dict[int, int] = {}  # id(Recorder) -> index in the "recorders" list
    rec_docs: list[dict] = []
    kernel = app.media.kernel
    handed_kernel = kernel.export() if kernel is not None else None  # counters first
    places = _stream_places(app)
    sessions = []
    for sess in app.sessions:
        sess_doc = {"call_id": sess.call_id, "from_tag": sess.from_tag}
        sess_doc.update(dump_fields(sess, SESSION_FIELDS))
        sess_doc["streams"] = [
            _stream_doc(st, fds, recorders, rec_docs, places) for st in sess.streams()
        ]
        sessions.append(sess_doc)
    media = app.media
    return {
        "sessions": sessions,
        "recorders": rec_docs,
        "allocators": {str(f): a.next_index for f, a in media.allocators.items()},
        "overloaded": media.overloaded,
        "load": media.load,
        "recording": dump_fields(
            media.recording.counters, slot_names(type(media.recording.counters))
        ),
        "ip_id": IP_ID.value,
        "notify": [_target_doc(t, fds) for t in app.notifier.targets.values()],
        "kernel": handed_kernel,
    }


def _stream_places(app) -> dict[int, list[int]]:
    """id(Stream) -> [its session's index in the snapshot, its index in `streams()`]."""
    return {
        id(st): [i, j] for i, sess in enumerate(app.sessions) for j, st in enumerate(sess.streams())
    }


def _stream_doc(st: Stream, fds: FdTable, recorders: dict, rec_docs: list, places: dict) -> dict:
    doc = dump_fields(st, STREAM_FIELDS)
    doc["laddr"] = None if st.laddr is None else encode(_laddr_tuple(st.laddr))
    doc["sock"] = None if st.sock is None else fds.add(st.sock.fileno())
    doc["twin"] = None if st.twin is None else fds.add(st.twin.fileno())
    doc["twin_dst"] = encode(st.twin_dst) if st.twin is not None else None
    if st.analyzer is not None:
        st.analyzer.sync()
        doc["analyzer"] = dump_fields(st.analyzer, ANALYZER_FIELDS)
    if st.resizer is not None:
        doc["resizer"] = _resizer_doc(st.resizer)
    doc["recorder"] = _attachment_doc(st.recorder, fds, recorders, rec_docs, places)
    doc["copier"] = _attachment_doc(st.copier, fds, recorders, rec_docs, places)
    if st.player is not None:
        doc["player"] = {
            "schedule": dump_fields(st.player.schedule, SCHEDULE_FIELDS),
            "npkts_played": st.player.npkts_played,
        }
    return doc


def _laddr_tuple(laddr: ListenAddr) -> tuple:
    return (laddr.family, laddr.host, laddr.label, laddr.advertised)


def _resizer_doc(resizer: Resizer) -> dict:
    doc = dump_fields(resizer, RESIZER_FIELDS)
    doc["_queue"] = [
        [dump_fields(q.pkt, PACKET_FIELDS), q.nsamples, q.appendable] for q in resizer._queue
    ]
    return doc


def _attachment_doc(att, fds: FdTable, recorders: dict, rec_docs: list, places: dict) -> Any:
    if att is None:
        return None
    if isinstance(att, StreamMirror):  # out of a session that has ended: copies nothing
        place = places.get(id(att.target))
        return None if place is None else {"kind": "mirror", "from": place}
    if isinstance(att, RemoteCopy):
        return {
            "kind": "remote",
            "fd": fds.add(att.sock.fileno()),
            "dest": encode(att.dest),
            "nsent": att.nsent,
            "nfailed": att.nfailed,
            "owns_port": att.sock.getsockname()[1] % 2 == 0,
        }
    rec = _underlying(att)
    index = recorders.get(id(rec))
    if index is None:
        index = recorders[id(rec)] = len(rec_docs)
        rec_docs.append(_recorder_doc(rec, fds))
    kind = {RoutedLocal: "routed", SwappedRtcp: "swapped"}.get(type(att), "plain")
    return {"kind": kind, "recorder": index}


def _recorder_doc(rec: Recorder, fds: FdTable) -> dict:
    doc, fd = rec.handoff_state()
    doc["fd"] = None if fd is None else fds.add(fd)
    return doc


def _target_doc(target: Target, fds: FdTable) -> dict:
    queued = []
    while target.queue.qsize():
        queued.append(target.queue.get_nowait())
    for message in queued:  # back, should the handoff fail
        target.queue.put_nowait(message)
    return {
        "family": target.family,
        "address": encode(target.address),
        "queued": encode(queued),
        "sock": None if target.sock is None else fds.add(target.sock.fileno()),
        "nsent": target.nsent,
        "nfailed": target.nfailed,
        "ndropped": target.ndropped,
    }


# ----------------------------------------------------------------- new process


def restore(app, doc: dict, fds: FdSource) -> list:
    """Rebuild the sessions; nothing reads or sends until `activate`. Returns what
    `activate` starts."""
    media = app.media
    media.driver.pause()
    rec_docs = doc.get("recorders", [])
    recorders: dict[int, Recorder] = {}
    players: list = []
    mirrors: list[StreamMirror] = []
    restored = [
        _restore_session(app, sess_doc, fds, rec_docs, recorders, (players, mirrors))
        for sess_doc in doc.get("sessions", [])
    ]
    for mirror in mirrors:
        i, j = mirror.target
        mirror.target = restored[i].streams()[j]
    handed_kernel = doc.get("kernel")
    if media.kernel is not None:
        media.kernel.adopt(handed_kernel or [], app.sessions)
    elif handed_kernel is not None:
        raise HandoffFailed("the kernel route's table cannot be taken over (see the log)")
    for family, index in doc.get("allocators", {}).items():
        alloc = media.allocators.get(int(family))
        if alloc is not None and 0 <= index < alloc.size:
            alloc.next_index = index
    media.overloaded = bool(doc.get("overloaded"))
    media.load = float(doc.get("load", 0.0))
    load_fields(
        media.recording.counters,
        doc.get("recording", {}),
        slot_names(type(media.recording.counters)),
    )
    IP_ID.value = int(doc.get("ip_id", 0))
    for tdoc in doc.get("notify", []):
        _restore_target(app.notifier, tdoc, fds)
    return players


def _restore_session(app, doc, fds, rec_docs, recorders, pending) -> Session:
    media = app.media
    sess = Session(doc["call_id"], doc["from_tag"], 0.0, 0.0)
    load_fields(sess, doc, SESSION_FIELDS)
    streams = sess.streams()
    for st, sdoc in zip(streams, doc["streams"], strict=True):
        _restore_stream(app, st, sdoc, fds, rec_docs, recorders, pending)
    for index in (0, 1):
        rtp = sess.rtp.streams[index]
        if rtp.sock is not None:
            media.allocators[rtp.laddr.family].in_use.add(rtp.port)
    app.sessions.add(sess)
    sess.driver = media.driver
    for st in streams:
        if st.sock is not None:
            media.driver.watch(st)
    sess._reroute()  # the routes, twins included, as the old process had them
    return sess


def _restore_stream(app, st: Stream, doc, fds, rec_docs, recorders, pending) -> None:
    """`pending`: (players, mirrors), the lists of what waits for GO and for every
    session to be back."""
    media = app.media
    players, mirrors = pending
    load_fields(st, doc, STREAM_FIELDS)
    if doc.get("laddr") is not None:
        st.laddr = _find_laddr(app.config, decode(doc["laddr"]))
    if doc.get("sock") is not None:
        st.sock = socket._socket.socket(fileno=fds.take(doc["sock"]))  # type: ignore[attr-defined]
        st.sock.setblocking(False)
    if doc.get("twin") is not None:
        twin = socket._socket.socket(fileno=fds.take(doc["twin"]))  # type: ignore[attr-defined]
        add_twin = getattr(media.driver, "add_twin", None)
        if add_twin is None:
            twin.close()  # a driver without twins: the stream's own socket gets it all
        else:
            twin.setblocking(False)
            st.twin, st.twin_dst = twin, decode(doc["twin_dst"])
            add_twin(st)
    if "analyzer" in doc:
        st.analyzer = RtpAnalyzer()
        load_fields(st.analyzer, doc["analyzer"], ANALYZER_FIELDS)
    elif st.is_rtp:
        st.analyzer = RtpAnalyzer()
    if "resizer" in doc:
        st.resizer = _restore_resizer(doc["resizer"])
    for slot in ("recorder", "copier"):
        att = _restore_attachment(app, st, doc.get(slot), fds, rec_docs, recorders)
        if isinstance(att, StreamMirror):
            mirrors.append(att)
        setattr(st, slot, att)
    if "player" in doc:
        schedule = PromptSchedule.__new__(PromptSchedule)
        load_fields(schedule, doc["player"]["schedule"], SCHEDULE_FIELDS)
        players.append((st, schedule, int(doc["player"].get("npkts_played", 0))))


def _find_laddr(config, fields: tuple) -> ListenAddr:
    laddr = ListenAddr(*fields)
    for known in (*config.listen, *(config.bridge or ())):
        if known == laddr:
            return known
    return laddr


def _restore_resizer(doc: dict) -> Resizer:
    resizer = Resizer.__new__(Resizer)
    load_fields(resizer, doc, RESIZER_FIELDS)
    queue = []
    for pkt_doc, nsamples, appendable in doc.get("_queue", []):
        pkt = RtpPacket()
        load_fields(pkt, pkt_doc, PACKET_FIELDS)
        queue.append(_Queued(pkt, nsamples, appendable))
    resizer._queue = queue
    return resizer


def _restore_attachment(app, st, doc, fds, rec_docs, recorders) -> Any:
    if doc is None:
        return None
    if doc["kind"] == "remote":
        return _restore_remote(app, doc, fds)
    if doc["kind"] == "mirror":
        return StreamMirror(tuple(doc["from"]))  # its stream, once every session is back
    index = doc["recorder"]
    rec = recorders.get(index)
    if rec is None:
        rec = recorders[index] = _restore_recorder(app, rec_docs[index], fds)
    if doc["kind"] == "routed":
        return RoutedLocal(rec)
    if doc["kind"] == "swapped":
        return SwappedRtcp(rec, st)
    return rec


def _restore_recorder(app, doc: dict, fds: FdSource) -> Recorder:
    recording = app.media.recording
    fd = None if doc["fd"] is None else fds.take(doc["fd"])
    return Recorder.adopt(doc, fd, recording.counters, recording.writer)


def _restore_remote(app, doc: dict, fds: FdSource) -> RemoteCopy:
    media = app.media
    sock = socket._socket.socket(fileno=fds.take(doc["fd"]))  # type: ignore[attr-defined]
    port = sock.getsockname()[1]
    allocator, budget = media.allocators[sock.family], media.fds

    def closed() -> None:
        if doc.get("owns_port"):
            allocator.release(port)
        budget.closed(1)

    if doc.get("owns_port"):
        allocator.in_use.add(port)
    copy = RemoteCopy(sock, decode(doc["dest"]), closed)
    copy.nsent = int(doc.get("nsent", 0))
    copy.nfailed = int(doc.get("nfailed", 0))
    return copy


def _restore_target(notifier, doc: dict, fds: FdSource) -> None:
    dest = (doc["family"], decode(doc["address"]))
    target = notifier.targets.get(dest)
    if target is None:
        target = notifier.targets[dest] = Target(*dest, counters=notifier.counters)
    if doc.get("sock") is not None:
        target.sock = socket.socket(fileno=fds.take(doc["sock"]))
    target.nsent = int(doc.get("nsent", 0))
    target.nfailed = int(doc.get("nfailed", 0))
    target.ndropped = int(doc.get("ndropped", 0))
    for message in decode(doc.get("queued") or []):
        target.queue.put_nowait(message)


def activate(app, players: list) -> None:
    """After GO: read the media sockets, play prompts, send notifications."""
    app.media.driver.resume()
    for st, schedule, played in players:
        app.media.players.start(st, schedule, new=False)
        st.player.npkts_played = played
    _resume_notifier(app.notifier)
