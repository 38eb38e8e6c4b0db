"""Session lookup by call-id and tags: the exact and prefix rules of PROTOCOL.md §7.1."""

from __future__ import annotations

from rtpp.media.session import Session
from rtpp.media.table import SessionTable, exact_match, prefix_match


def sess(call_id: str, from_tag: str) -> Session:
    return Session(call_id, from_tag, 0.0, 0.0)


def table(*sessions: Session) -> SessionTable:
    t = SessionTable()
    for s in sessions:
        t.add(s)
    return t


# exact_match


def test_exact_forward_match_is_leg_1():
    assert exact_match(sess("c", "ftag"), "ftag", None) == 1
    assert exact_match(sess("c", "ftag"), "ftag", "other") == 1


def test_exact_reverse_match_by_to_tag_is_leg_0():
    assert exact_match(sess("c", "alice"), "bob", "alice") == 0


def test_exact_forward_wins_over_reverse():
    assert exact_match(sess("c", "a"), "a", "a") == 1


def test_exact_no_match_without_to_tag():
    assert exact_match(sess("c", "alice"), "bob", None) is None


def test_exact_no_match_when_neither_tag_is_the_session_tag():
    assert exact_match(sess("c", "alice"), "bob", "carol") is None


def test_exact_tags_compare_bytewise():
    assert exact_match(sess("c", "Alice"), "alice", None) is None
    assert exact_match(sess("c", "alice"), "bob", "alice ") is None


def test_exact_forward_needs_the_full_tag_with_its_media_number():
    assert exact_match(sess("c", "alice;1"), "alice", None) is None
    assert exact_match(sess("c", "alice;1"), "alice;1", None) == 1


def test_exact_reverse_with_media_number_suffix_matches_the_same_suffix():
    assert exact_match(sess("c", "alice;1"), "bob;1", "alice") == 0
    assert exact_match(sess("c", "alice;2"), "bob;2", "alice") == 0


def test_exact_reverse_with_media_number_suffix_rejects_another_suffix():
    assert exact_match(sess("c", "alice;1"), "bob;2", "alice") is None


def test_exact_reverse_with_media_number_suffix_needs_a_suffix_on_the_from_tag():
    assert exact_match(sess("c", "alice;1"), "bob", "alice") is None


def test_exact_reverse_suffix_rule_compares_from_the_last_semicolon():
    assert exact_match(sess("c", "alice;x;1"), "bob;1", "alice") == 0
    assert exact_match(sess("c", "alice;x;1"), "bob;y;1", "alice") == 0
    assert exact_match(sess("c", "alice;x;1"), "bob;x", "alice") is None
    assert exact_match(sess("c", "alice;x;1"), "bob;1", "alice;x") == 0


def test_exact_reverse_suffix_rule_needs_the_to_tag_as_a_whole_prefix():
    assert exact_match(sess("c", "alice;1"), "bob;1", "ali") is None
    assert exact_match(sess("c", "alice;1"), "bob;1", "alice;") is None


# prefix_match


def test_prefix_matches_the_same_tag():
    assert prefix_match(sess("c", "alice"), "alice")


def test_prefix_matches_a_session_tag_with_a_media_number():
    assert prefix_match(sess("c", "alice;1"), "alice")
    assert prefix_match(sess("c", "alice;1;2"), "alice;1")


def test_prefix_needs_the_semicolon_after_the_tag():
    assert not prefix_match(sess("c", "alicex"), "alice")
    assert not prefix_match(sess("c", "alice"), "alice;1")
    assert not prefix_match(sess("c", "alice"), "ali")


# SessionTable


def test_add_counts_and_numbers_sessions_in_creation_order():
    a, b, c = sess("c1", "a"), sess("c1", "b"), sess("c2", "c")
    t = table(a, b, c)
    assert t.count == 3
    assert a.seq < b.seq < c.seq
    assert list(t) == [a, b, c]


def test_remove_forgets_the_session_and_empty_call_ids():
    a, b = sess("c1", "a"), sess("c1", "b")
    t = table(a, b)
    t.remove(a)
    assert t.count == 1
    assert t.by_call == {"c1": [b]}
    t.remove(b)
    assert t.count == 0
    assert t.by_call == {}


def test_remove_of_an_unknown_session_changes_nothing():
    a = sess("c1", "a")
    t = table(a)
    t.remove(sess("c1", "a"))  # equal fields, another object
    t.remove(sess("c9", "z"))
    t.remove(a)
    t.remove(a)
    assert t.count == 0


def test_sessions_can_be_removed_while_iterating():
    sessions = [sess("c", str(i)) for i in range(5)]
    t = table(*sessions)
    for s in t:
        t.remove(s)
    assert t.count == 0
    assert list(t) == []


def test_find_exact_forward_and_reverse_legs():
    a = sess("c", "alice")
    t = table(a)
    assert t.find_exact("c", "alice", None) == (a, 1)
    assert t.find_exact("c", "bob", "alice") == (a, 0)


def test_find_exact_is_limited_to_the_call_id():
    t = table(sess("c1", "alice"))
    assert t.find_exact("c2", "alice", None) is None


def test_find_exact_without_match_is_none():
    t = table(sess("c", "alice"))
    assert t.find_exact("c", "bob", None) is None
    assert t.find_exact("c", "bob", "carol") is None


def test_find_exact_first_session_in_creation_order_wins():
    first = sess("c", "bob")  # reverse match for (alice, bob)
    second = sess("c", "alice")  # forward match for (alice, bob)
    t = table(first, second)
    assert t.find_exact("c", "alice", "bob") == (first, 0)


def test_find_exact_picks_the_stream_by_media_number():
    s1, s2 = sess("c", "alice;1"), sess("c", "alice;2")
    t = table(s1, s2)
    assert t.find_exact("c", "alice;2", None) == (s2, 1)
    assert t.find_exact("c", "bob;2", "alice") == (s2, 0)
    assert t.find_exact("c", "bob;1", "alice") == (s1, 0)


def test_find_prefix_returns_every_match_in_creation_order():
    s1, other, s2 = sess("c", "alice;1"), sess("c", "bob"), sess("c", "alice;2")
    t = table(s1, other, s2)
    assert t.find_prefix("c", "alice", None) == [(s1, 1, False), (s2, 1, False)]


def test_find_prefix_flags_exact_tag_equality():
    plain, numbered = sess("c", "alice"), sess("c", "alice;1")
    t = table(plain, numbered)
    assert t.find_prefix("c", "alice", None) == [(plain, 1, True), (numbered, 1, False)]


def test_find_prefix_tries_the_to_tag_only_when_the_from_tag_found_nothing():
    a, b = sess("c", "alice"), sess("c", "bob")
    t = table(a, b)
    assert t.find_prefix("c", "alice", "bob") == [(a, 1, True)]
    assert t.find_prefix("c", "carol", "bob") == [(b, 0, True)]


def test_find_prefix_without_match_is_empty():
    t = table(sess("c", "alice"))
    assert t.find_prefix("c", "bob", None) == []
    assert t.find_prefix("c", "bob", "carol") == []
    assert t.find_prefix("other", "alice", None) == []
