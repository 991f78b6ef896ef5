"""What a DynamoDB registry's verbs cost does not grow with its alias history: requests and
capacity units counted at the client (``RequestMeter``), at 2 alias moves and at 100.

A counting test, not a timed one: the figures are the requests the store sends and the units
DynamoDB's rules charge for the items read, which no load on the machine can change.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from modelledger import Registry, create_identity
from modelledger._lifecycle import EventDraft
from modelledger.stores.artifacts import ArtifactStore
from modelledger.stores.dynamodb import DynamoStore
from modelledger.stores.dynamodb.metering import RequestMeter, Usage, item_size

MODEL = "churn"
MOVES_PER_WRITE = 20  # alias moves appended per governed write while the history is grown


class Double:
    """The model: twice its input column."""

    def predict(self, frame: Any) -> Any:
        return [float(v) * 2 for v in frame["x"]]


@dataclass
class Scene:
    store: DynamoStore
    registry: Registry
    prediction: str
    moves: int  # the model's alias moves so far
    middle: str  # a time in the middle of the alias history
    middle_version: int  # the version @champion named then


def _open(store: DynamoStore, artifacts: Path, actor: str) -> Registry:
    # around the store itself (not Registry.open): the meter listens on this store's client
    return Registry(store, ArtifactStore(artifacts.as_uri()), actor=actor)


@pytest.fixture
def scene(s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Scene]:
    """A DynamoDB registry: two versions, the alias moved twice, one captured prediction."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    prefix = f"c{uuid.uuid4().hex[:10]}-"
    store = DynamoStore(f"dynamodb://{prefix}?region=us-east-1&endpoint_url={s3_server}")
    admin = _open(store, tmp_path / "artifacts", "alice@example.com")
    admin.init()
    serving_name = f"serving-{uuid.uuid4().hex[:8]}@example.com"
    admin.enrol(serving_name, create_identity(serving_name)[2], roles=["serving"], models="*")
    for _ in range(2):
        admin.register(MODEL, Double(), capture=False)
    admin.set_alias(MODEL, "champion", 1)
    admin.set_alias(MODEL, "champion", 2)
    middle = admin.alias_history(MODEL, "champion")[0].time
    served = _open(store, tmp_path / "artifacts", serving_name).load(
        f"models:/{MODEL}@champion", capture=True
    )
    try:
        prediction = served.predict(pd.DataFrame({"x": [1.0, 2.0]})).receipts.ids[0]
    finally:
        served.close()
    yield Scene(store, admin, prediction, 2, middle, 1)
    store.close()


def _grow(scene: Scene, moves: int) -> None:
    """Move ``@champion`` ``moves`` more times (between versions 1 and 2), twenty moves a write,
    through the store's governed append as the registry's own verbs do one at a time."""
    signer = scene.registry._signer()
    while moves > 0:
        k = min(MOVES_PER_WRITE, moves)
        start = scene.moves

        def decide(_ctx: Any, start: int = start, k: int = k) -> list[EventDraft]:
            drafts = []
            for i in range(start, start + k):
                version, previous = 1 + i % 2, 1 + (i - 1) % 2
                data = {
                    "model": MODEL,
                    "alias": "champion",
                    "version": version,
                    "previous": previous,
                    "aliases": {"champion": version},
                }
                drafts.append(EventDraft("alias.set", f"models:/{MODEL}@champion", data))
            return drafts

        events = scene.store.govern(MODEL, None, decide, actor=scene.registry.actor, signer=signer)
        scene.moves += k
        moves -= k
        if scene.moves - k < 50 <= scene.moves:
            # the moves of one write share its time: the last of them is in force then
            scene.middle, scene.middle_version = events[-1].time, 1 + (scene.moves - 1) % 2


def _costs(scene: Scene) -> dict[str, tuple[Usage, Any]]:
    """Each read verb once, metered: its usage and its answer."""
    reg = scene.registry
    verbs = {
        "get by alias": lambda: reg.get_version(f"models:/{MODEL}@champion").version,
        "alias at a time": lambda: reg.alias_at(MODEL, "champion", scene.middle),
        "aliases now": lambda: [(c.alias, c.version) for c in reg.alias_history(MODEL, latest=True)],
        "trace": lambda: reg.trace(scene.prediction).governance["aliases_at_prediction"],
    }
    out = {}
    with RequestMeter(scene.store) as meter:
        for verb, call in verbs.items():
            call()  # once unmetered: the registry's first-use reads (schema, key) are not the verb's
            meter.take()
            answer = call()
            out[verb] = (meter.take(), answer)
    return out


def _set_alias(scene: Scene, version: int) -> Usage:
    with RequestMeter(scene.store) as meter:
        scene.registry.set_alias(MODEL, "champion", version)
        scene.moves += 1
        return meter.take()


def test_key_verbs_cost_the_same_at_2_and_100_alias_moves(scene: Scene) -> None:
    small = _costs(scene)
    _set_alias(scene, 1)  # first use of the registry's signer and caches: not counted
    small_write = _set_alias(scene, 2)
    _grow(scene, 96)
    large = _costs(scene)
    large_write = _set_alias(scene, 1 + scene.moves % 2)
    assert scene.moves == 101
    assert len(scene.registry.alias_history(MODEL, "champion")) == 101  # the moves are all there
    for verb in small:
        (before, _), (after, _) = small[verb], large[verb]
        assert before.requests > 0, verb
        # the same requests, reading the same number of 4 KB units: nothing walks the history
        assert (after.requests, after.operations, after.read_units) == (
            before.requests,
            before.operations,
            before.read_units,
        ), verb
    assert small_write.operations.get("TransactWriteItems") == 1
    assert (large_write.requests, large_write.operations, large_write.write_units) == (
        small_write.requests,
        small_write.operations,
        small_write.write_units,
    )
    # and the answers are right at both sizes
    assert small["get by alias"][1] == 2 and large["get by alias"][1] == 2  # an even count ends on 2
    assert small["alias at a time"][1] == 1  # between the two first moves
    assert large["alias at a time"][1] == scene.middle_version
    assert small["aliases now"][1] == large["aliases now"][1] == [("champion", 2)]
    assert small["trace"][1] == large["trace"][1] == ["champion"]


def test_a_page_of_versions_costs_the_same_whatever_its_length(scene: Scene) -> None:
    reg = scene.registry

    def page(limit: int) -> tuple[Usage, list[Any]]:
        with RequestMeter(scene.store) as meter:
            versions = reg.list_versions(MODEL, limit=limit).items
            return meter.take(), [(v.version, v.aliases, v.tags) for v in versions]

    reg.set_version_tags(f"models:/{MODEL}/1", {"team": "risk"})
    reg.set_version_tags(f"models:/{MODEL}/2", {"owner": "ana", "stage": "b"})
    page(2)  # first use: not counted
    two = page(2)
    for _ in range(3):
        reg.register(MODEL, Double(), capture=False)
    reg.set_version_tags(f"models:/{MODEL}/4", {"team": "ops"})
    five = page(5)
    assert two[1] == [(2, ("champion",), {"owner": "ana", "stage": "b"}), (1, (), {"team": "risk"})]
    assert five[1] == [(5, (), {}), (4, (), {"team": "ops"}), (3, (), {}), *two[1]]
    # the page's aliases and tags are read once for the page, not once per version
    assert (five[0].requests, five[0].operations) == (two[0].requests, two[0].operations)


def test_a_name_prefix_search_reads_one_page_however_many_models_match(scene: Scene) -> None:
    reg = scene.registry

    def search() -> tuple[Usage, list[str]]:
        with RequestMeter(scene.store) as meter:
            found = [m.name for m in reg.list_models(prefix="team-", limit=2)]
            return meter.take(), found

    for i in range(3):
        reg.create_model(f"team-{i:02d}")
    search()  # first use: not counted
    few = search()
    for i in range(3, 40):
        reg.create_model(f"team-{i:02d}")
    many = search()
    assert few[1] == many[1] == ["team-00", "team-01"]
    assert (many[0].requests, many[0].read_units) == (few[0].requests, few[0].read_units)


def test_the_meter_counts_each_request_and_its_capacity(scene: Scene) -> None:
    with RequestMeter(scene.store) as meter:
        scene.store.get(scene.store.state_table, "HEAD", "HEAD")
        scene.store.get(scene.store.state_table, "NO", "SUCH")
        one = meter.take()
    assert (one.requests, one.attempts, dict(one.operations)) == (2, 2, {"GetItem": 2})
    assert one.read_units == 2.0  # strongly consistent: 1 unit each, a missing item included
    assert one.server_units > 0  # asked for, and answered
    with RequestMeter(scene.store, ask_server=False) as meter:
        scene.store.get(scene.store.state_table, "HEAD", "HEAD")
        quiet = meter.take()
    assert quiet.server_units == 0 and quiet.requests == 1
    # an item's size is its attribute names and values, as DynamoDB counts them
    big = {"pk": {"S": "x"}, "sk": {"S": "y"}, "d": {"S": "z" * 4993}, "n": {"N": "12345"}}
    assert item_size(big) == (2 + 1) + (2 + 1) + (1 + 4993) + (1 + 4)  # 5 digits: 3 bytes + 1
    assert Usage.from_dict(one.to_dict()) == one
