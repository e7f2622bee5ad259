"""Ids on the command line: short forms in tables, unique prefixes resolved, one-line errors otherwise."""

from __future__ import annotations

import pytest

from eventlog.errors import FsmlogError
from fsmlog.cli.ids import SHORT, AmbiguousId, UnknownId, resolve, short_ids

IDS = ["3b9be5b1619346c49932017339b7644f", "36bd8fc830a949eda0644106ff4bfe22", "a652b7498c704646b7fa9ee7da16585e"]


def test_short_ids_are_8_characters_when_that_is_unique():
    assert short_ids(IDS) == {cid: cid[:SHORT] for cid in IDS}


def test_short_ids_grow_only_where_two_ids_share_their_first_8_characters():
    twins = ["abcdef1234aaaa", "abcdef1299bbbb", "ffffffff00000000"]
    short = short_ids(twins)
    assert short == {"abcdef1234aaaa": "abcdef123", "abcdef1299bbbb": "abcdef129", "ffffffff00000000": "ffffffff"}
    for cid, prefix in short.items():  # each short form names its id and no other
        assert [c for c in twins if c.startswith(prefix)] == [cid]


def test_short_ids_leave_short_ids_whole():
    assert short_ids(["order-1", "order-2"]) == {"order-1": "order-1", "order-2": "order-2"}


def test_a_unique_prefix_resolves_to_its_id():
    kw = dict(kind="machine", where="the log", listing="fsmlog status")
    assert resolve("3b9b", IDS, **kw) == IDS[0]
    assert resolve(IDS[1][:SHORT], IDS, **kw) == IDS[1]
    assert resolve(IDS[2], IDS, **kw) == IDS[2]


def test_an_exact_id_wins_over_the_ids_it_is_a_prefix_of():
    assert resolve("order-1", ["order-1", "order-10", "order-11"], kind="machine", where="w",
                   listing="fsmlog status") == "order-1"


def test_an_ambiguous_prefix_is_one_line_listing_the_candidates():
    with pytest.raises(AmbiguousId) as caught:
        resolve("3", IDS, kind="machine", where="sqlite:///x.db", listing="fsmlog status")
    err = caught.value
    assert isinstance(err, FsmlogError)
    assert err.prefix == "3" and err.candidates == tuple(sorted(IDS[:2])) and err.kind == "machine"
    assert str(err) == (f"machine id '3' is ambiguous in sqlite:///x.db: 2 ids start with it "
                        f"({IDS[1]}, {IDS[0]}); give more characters")


def test_many_candidates_are_counted_not_all_listed():
    many = [f"order-{n}" for n in range(1, 9)]
    with pytest.raises(AmbiguousId) as caught:
        resolve("order-", many, kind="machine", where="w", listing="fsmlog status")
    assert len(caught.value.candidates) == 8
    assert "order-1, order-2, order-3, order-4, order-5 and 3 more" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_prefix_of_nothing_is_a_no_machine_error_naming_the_listing_command():
    with pytest.raises(UnknownId) as caught:
        resolve("zz", IDS, kind="machine", where="sqlite:///x.db", listing="fsmlog status")
    assert caught.value.candidates == () and caught.value.prefix == "zz"
    assert str(caught.value) == ("no machine with id 'zz' (or an id starting with it) in sqlite:///x.db; "
                                 "`fsmlog status` lists them")
