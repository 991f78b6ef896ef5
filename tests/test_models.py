from __future__ import annotations

import pytest
from tests.conftest import Api

from modelledger import AlreadyExists, InvalidInput, NotFound, Registry


@pytest.fixture
def registry(api: Api) -> Registry:
    """Every test here runs on SQLite, on PostgreSQL and through a live server."""
    return api.open("alice@example.com")


def test_create_and_get_model(registry: Registry) -> None:
    created = registry.create_model("credit-risk", description="PD model", tags={"team": "risk"})
    got = registry.get_model("credit-risk")
    assert got.name == created.name == "credit-risk"
    assert got.description == "PD model"
    assert dict(got.tags) == {"team": "risk"}
    assert got.latest_version == 0


def test_duplicate_model_is_refused(registry: Registry) -> None:
    registry.create_model("credit-risk")
    with pytest.raises(AlreadyExists, match="credit-risk"):
        registry.create_model("credit-risk")


def test_unknown_model(registry: Registry) -> None:
    with pytest.raises(NotFound, match="model not found: nope"):
        registry.get_model("nope")


def test_update_description_and_tags(registry: Registry) -> None:
    registry.create_model("m", tags={"a": "1", "b": "2"})
    m = registry.update_model("m", description="new", tags={"a": "9", "b": None, "c": "3"})
    assert m.description == "new"
    assert dict(m.tags) == {"a": "9", "c": "3"}


def test_list_is_paginated_with_a_cursor(registry: Registry) -> None:
    names = [f"model-{i:03d}" for i in range(25)]
    for name in reversed(names):
        registry.create_model(name)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = registry.list_models(limit=10, cursor=cursor)
        pages += 1
        seen.extend(m.name for m in page)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == names
    assert pages == 3


def test_search_by_prefix_and_tag(registry: Registry) -> None:
    registry.create_model("credit-risk", tags={"team": "risk", "tier": "1"})
    registry.create_model("credit-limit", tags={"team": "limits"})
    registry.create_model("churn", tags={"team": "risk"})
    registry.create_model("credit_x")  # '_' must not act as a LIKE wildcard
    assert [m.name for m in registry.list_models(prefix="credit-")] == ["credit-limit", "credit-risk"]
    assert [m.name for m in registry.list_models(tags={"team": "risk"})] == ["churn", "credit-risk"]
    assert [m.name for m in registry.list_models(prefix="cr", tags={"team": "risk", "tier": "1"})] == [
        "credit-risk"
    ]
    assert list(registry.list_models(prefix="zzz")) == []


@pytest.mark.parametrize("bad", ["", "a/b", "../etc", "has space", "-leading", "a..b", "x" * 129, "é"])
def test_bad_model_names_are_refused(registry: Registry, bad: str) -> None:
    with pytest.raises(InvalidInput):
        registry.create_model(bad)
    assert list(registry.list_models()) == []


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_bad_limit(registry: Registry, limit: int) -> None:
    with pytest.raises(InvalidInput, match="limit"):
        registry.list_models(limit=limit)


def test_bad_cursor(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match="cursor"):
        registry.list_models(cursor="!!not-a-cursor!!")
