from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_server.errors import InvalidInput
from mcp_server.selectors import Requirement, Selector, parse_selector

PROD_WEB = {"env": "prod", "opsmedic.managed": "true", "tier": "web", "gpu": ""}


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("env=prod", PROD_WEB, True),
        ("env=staging", PROD_WEB, False),
        ("env==prod", PROD_WEB, True),
        ("tier!=db", PROD_WEB, True),
        ("tier!=web", PROD_WEB, False),
        ("missing!=x", PROD_WEB, True),  # absent label satisfies !=
        ("gpu", PROD_WEB, True),
        ("cpu", PROD_WEB, False),
        ("!cpu", PROD_WEB, True),
        ("!gpu", PROD_WEB, False),
        ("env=prod,opsmedic.managed=true,tier!=db,gpu", PROD_WEB, True),
        ("env=prod,opsmedic.managed=false", PROD_WEB, False),
        (" env = prod , gpu ", PROD_WEB, True),
        ("gpu=", PROD_WEB, True),  # empty value matches an empty label
        ("com.example/team=ops-1", {"com.example/team": "ops-1"}, True),
        ("env=prod", {}, False),
        ("tier!=db", {}, True),
    ],
)
def test_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


def test_empty_selector_matches_everything() -> None:
    for text in ("", "   ", None):
        sel = parse_selector(text)
        assert sel.is_empty
        assert sel.matches({}) and sel.matches(None) and sel.matches(PROD_WEB)


def test_none_labels_count_as_no_labels() -> None:
    assert parse_selector("!a").matches(None)
    assert not parse_selector("a").matches(None)


@pytest.mark.parametrize(
    "text", ["=prod", "env=prod,,gpu", "env=pr od", "env=prod=x", "a b", "env!prod", ",", "-x=1"]
)
def test_invalid_selector_shows_expected_form(text: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_selector(text)
    assert "key=value" in str(err.value)
    assert "env=prod,opsmedic.managed=true" in str(err.value)  # an example to copy


def test_parsed_terms_and_str_round_trip() -> None:
    sel = parse_selector("env=prod, tier!=db,gpu,!legacy")
    assert sel.requirements == (
        Requirement("env", "=", "prod"),
        Requirement("tier", "!=", "db"),
        Requirement("gpu", "exists"),
        Requirement("legacy", "absent"),
    )
    assert str(sel) == "env=prod,tier!=db,gpu,!legacy"
    assert parse_selector(str(sel)) == sel


def test_equality_labels_only_for_pure_equality_selectors() -> None:
    assert parse_selector("opsmedic.managed=true").equality_labels() == {"opsmedic.managed": "true"}
    assert parse_selector("env=prod,tier!=db").equality_labels() is None
    assert Selector().equality_labels() is None


keys = st.from_regex(r"[a-z][a-z0-9._-]{0,8}[a-z0-9]", fullmatch=True)
values = st.from_regex(r"[A-Za-z0-9._-]{0,8}", fullmatch=True)
labelsets = st.dictionaries(keys, values, max_size=5)


@given(labelsets)
def test_selector_built_from_labels_matches_them(labels: dict[str, str]) -> None:
    text = ",".join(f"{k}={v}" for k, v in labels.items())
    sel = parse_selector(text)
    assert sel.matches(labels)
    assert parse_selector(str(sel)) == sel


@given(labelsets, keys, values)
def test_not_equal_is_the_negation_of_equal(labels: dict[str, str], key: str, value: str) -> None:
    eq = parse_selector(f"{key}={value}").matches(labels)
    ne = parse_selector(f"{key}!={value}").matches(labels)
    assert eq is not ne
