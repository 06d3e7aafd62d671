import pytest

from pollybot_leads.leads.metadata import MAX_FILTER_VALUES, apply_merge_patch, metadata_problems
from pollybot_leads.leads.rules import count_filter_values, metadata_index_entries

# RFC 7386, Appendix A (the object-valued cases; metadata is always an object).
RFC_CASES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC_CASES)
def test_merge_patch_follows_rfc_7386(target, patch, expected):
    original = repr(target)
    assert apply_merge_patch(target, patch) == expected
    assert repr(target) == original  # inputs are not modified


def test_problems_are_reported_per_path():
    problems = metadata_problems({"ok": 1, "$bad": 1, "x": {"a.b": 2}, "big": 2**70})
    assert set(problems) == {"metadata.$bad", "metadata.x.a.b", "metadata.big"}


def test_valid_metadata_has_no_problems():
    assert metadata_problems({"a": {"b": [1, {"c": None}]}, "n": -1.5, "t": True}) == {}


def test_filterable_values_are_the_index_entries_each_counted_once():
    metadata = {
        "a": [1, 1.0, "1", True, None, [2], {"b": 3}, "x" * 201],
        "b": 1,
        "c": {"d": [4, 5]},  # nested: not filterable
        "e": "x" * 200,
    }
    # 1 and 1.0 are one value; "1" and true others; b's 1 is its own key's; e's string
    # is at the longest a filter takes.
    assert len(metadata_index_entries(metadata)) == 5
    assert count_filter_values(metadata, up_to=100) == 5
    assert count_filter_values(metadata, up_to=2) == 3  # stops once past the limit


def test_more_filterable_values_than_the_limit_is_a_problem():
    assert metadata_problems({"a": list(range(MAX_FILTER_VALUES))}) == {}
    problems = metadata_problems({"a": list(range(MAX_FILTER_VALUES)), "b": 0})
    assert list(problems) == ["metadata"]
    assert str(MAX_FILTER_VALUES) in problems["metadata"][0]
