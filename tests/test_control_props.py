"""Property tests: `-s` and `-n` socket syntax, the UDP reply cache bound, reply limits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rtpp.commands.reply import REPLY_BUF_BYTES, compose_subreplies
from rtpp.control.rcache import ReplyCache
from rtpp.control.spec import ControlSpec, SpecError, parse_spec
from rtpp.media.notify import NotifyConfigError, parse_target

SETTINGS = settings(max_examples=200, deadline=None)

prefixes = st.sampled_from(["", "udp:", "udp6:", "tcp:", "tcp6:", "unix:", "cunix:", "stdio:"])
texts = st.text(st.characters(codec="utf-8"), max_size=40)
digits = st.text("0123456789", min_size=1, max_size=30)
ports = st.one_of(digits, texts, st.just("²"), st.just("٣"))


@SETTINGS
@given(prefixes, texts, ports)
def test_control_spec_is_a_spec_or_a_spec_error(prefix, host, port):
    text = f"{prefix}{host}:{port}"
    try:
        spec = parse_spec(text)
    except SpecError:
        return
    assert isinstance(spec, ControlSpec) and spec.text == text
    if spec.port is not None:
        assert 0 < spec.port < 65536


@SETTINGS
@given(st.sampled_from(["tcp:127.0.0.1:", "tcp:%%CC_SELF%%:"]), ports)
def test_notify_tcp_target_is_a_target_or_a_config_error(head, port):
    try:
        spec = parse_target(head + port)
    except NotifyConfigError:
        return
    assert 0 < spec.port < 65536


@SETTINGS
@given(texts.filter(lambda t: not t.startswith("tcp:")))
def test_notify_unix_targets_keep_their_path(text):
    try:
        spec = parse_target(text)
    except NotifyConfigError:
        assert not text
        return
    assert spec.name == "unix:" + spec.address


@SETTINGS
@given(
    st.lists(
        st.tuples(st.binary(min_size=1, max_size=3000), st.binary(max_size=3000)),
        max_size=60,
    ),
    st.integers(1000, 50_000),
)
def test_reply_cache_stays_within_its_byte_bound(entries, bound):
    cache = ReplyCache(max_bytes=bound)
    for i, (cookie, reply) in enumerate(entries):
        cache.insert(cookie, reply, now=float(i))
        assert cache.nbytes <= max(bound, len(cookie) + len(reply) + 200)
        assert cache.lookup(cookie, now=float(i)) == reply  # the newest always stays
    live = {c: r for c, r in entries}
    assert cache.nbytes == sum(
        len(c) + len(live[c]) + 200 for c in live if cache.lookup(c, 0) is not None
    )


results = st.one_of(st.none(), st.just(-1), st.just(""), st.text("0123456789 .", max_size=60))


@SETTINGS
@given(st.text("0123456789 .", max_size=300), st.lists(results, max_size=15), st.integers(0, 600))
def test_composed_replies_fit_the_reply_buffer(main, subs, overhead):
    body = compose_subreplies(main, subs, overhead)
    assert body.startswith(main)
    if overhead + len(main) + 2 + len(" && -1") <= REPLY_BUF_BYTES:
        assert overhead + len(body.encode()) + 2 <= REPLY_BUF_BYTES
