import pytest

from pollybot_leads.leads.metadata import apply_merge_patch, metadata_problems

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
