import pytest

from pollybot_leads.domain.metadata import (
    apply_merge_patch,
    metadata_problems,
    plan_metadata_update,
)

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


def test_plan_touches_only_the_named_paths():
    plan = plan_metadata_update({"a": {"x": 1}, "b": 2, "c": 3}, {"a": {"y": 2}, "c": None})
    assert plan.sets == {"metadata.a.y": 2}
    assert plan.unsets == ["metadata.c"]
    assert {"metadata.a": {"$type": "object"}} in plan.guards


def test_plan_replaces_non_objects_whole_and_guards_that():
    plan = plan_metadata_update(
        {"a": 5, "l": [{"x": 1}]}, {"a": {"b": None, "c": 1}, "l": {"k": 1}}
    )
    assert plan.sets == {"metadata.a": {"c": 1}, "metadata.l": {"k": 1}}
    assert {"metadata.a": {"$not": {"$type": "object"}}} in plan.guards
    assert {"metadata.l": {"$type": "array"}} in plan.guards


def test_removing_an_absent_key_plans_nothing():
    plan = plan_metadata_update({}, {"gone": None})
    assert (plan.sets, plan.unsets, plan.guards) == ({}, [], [])


def test_problems_are_reported_per_path():
    problems = metadata_problems({"ok": 1, "$bad": 1, "x": {"a.b": 2}, "big": 2**70})
    assert set(problems) == {"metadata.$bad", "metadata.x.a.b", "metadata.big"}


def test_valid_metadata_has_no_problems():
    assert metadata_problems({"a": {"b": [1, {"c": None}]}, "n": -1.5, "t": True}) == {}
