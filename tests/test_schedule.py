"""Cron schedules (a table of expression, time -> next and previous firing) and the scheduler's
firing record: each due time fires once, whichever scheduler gets there first."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from tests.conftest import enrol_cast
from tests.helpers import serve_app

from modelledger import (
    Firing,
    InvalidInput,
    InvalidManifest,
    Manifest,
    RefreshDeclaration,
    Registry,
    Scheduler,
    parse_cron,
)
from modelledger._time import to_text
from modelledger.cli import main
from modelledger.server import ServerOptions, create_app

UTC = timezone.utc


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# expression, after -> the first firing strictly after it
NEXT = [
    ("0 3 * * MON", "2026-12-01 00:00", "2026-12-07 03:00"),  # 1 Dec 2026 is a Tuesday
    ("0 3 * * MON", "2026-12-07 03:00", "2026-12-14 03:00"),  # strictly after: not the same minute
    ("0 3 * * MON", "2026-12-07 02:59:59", "2026-12-07 03:00"),
    ("0 3 * * 1", "2026-12-01 00:00", "2026-12-07 03:00"),  # numbers and names agree
    ("0 0 * * SUN", "2026-12-01 00:00", "2026-12-06 00:00"),
    ("0 0 * * 7", "2026-12-01 00:00", "2026-12-06 00:00"),  # 7 is Sunday too
    ("*/15 * * * *", "2026-12-31 23:59", "2027-01-01 00:00"),  # over the year's end
    ("*/15 * * * *", "2026-12-01 10:07", "2026-12-01 10:15"),
    ("5/20 * * * *", "2026-12-01 10:46", "2026-12-01 11:05"),  # 5, 25, 45
    ("0 9-17/4 * * *", "2026-12-01 13:00", "2026-12-01 17:00"),  # 9, 13, 17
    ("30 6 1,15 * *", "2026-12-02 00:00", "2026-12-15 06:30"),
    ("0 0 31 * *", "2026-11-01 00:00", "2026-12-31 00:00"),  # November has no 31st
    ("0 0 29 2 *", "2026-01-01 00:00", "2028-02-29 00:00"),  # the next leap day
    ("0 12 1 * MON", "2026-12-02 00:00", "2026-12-07 12:00"),  # both days restricted: either
    ("0 12 1 * MON", "2026-12-28 13:00", "2027-01-01 12:00"),  # the 1st (a Friday)
    ("0 12 */2 * MON", "2026-12-01 13:00", "2026-12-07 12:00"),  # "*"-based day: both must match
    ("0 0 1 JAN,jul *", "2026-02-01 00:00", "2026-07-01 00:00"),  # names, any case
    ("0 22 * * MON-FRI", "2026-12-04 22:00", "2026-12-07 22:00"),  # Friday -> Monday
    ("@hourly", "2026-12-01 10:00", "2026-12-01 11:00"),
    ("@daily", "2026-12-01 10:00", "2026-12-02 00:00"),
    ("@weekly", "2026-12-01 10:00", "2026-12-06 00:00"),
    ("@monthly", "2026-12-01 10:00", "2027-01-01 00:00"),
    ("@yearly", "2026-12-01 10:00", "2027-01-01 00:00"),
]


@pytest.mark.parametrize(("expression", "after", "expected"), NEXT)
def test_next_after(expression: str, after: str, expected: str) -> None:
    assert parse_cron(expression).next_after(t(after)) == t(expected)


# expression, at -> the last firing at or before it
PREVIOUS = [
    ("0 3 * * MON", "2026-12-07 03:00:30", "2026-12-07 03:00"),  # the same minute counts
    ("0 3 * * MON", "2026-12-07 02:59", "2026-11-30 03:00"),
    ("*/15 * * * *", "2027-01-01 00:14", "2027-01-01 00:00"),
    ("*/15 * * * *", "2026-12-01 00:00", "2026-12-01 00:00"),
    ("0 0 31 * *", "2026-12-30 00:00", "2026-10-31 00:00"),
    ("0 0 29 2 *", "2027-06-01 00:00", "2024-02-29 00:00"),
    ("30 6 1,15 * *", "2026-12-15 06:29", "2026-12-01 06:30"),
    ("0 22 * * MON-FRI", "2026-12-07 21:00", "2026-12-04 22:00"),
]


@pytest.mark.parametrize(("expression", "at", "expected"), PREVIOUS)
def test_previous(expression: str, at: str, expected: str) -> None:
    assert parse_cron(expression).previous(t(at)) == t(expected)


@pytest.mark.parametrize(
    "expression", ["0 3 * * MON", "*/7 */5 * * *", "0 12 1,20 * FRI", "15 4 */3 * *", "0 0 * FEB-MAR SAT"]
)
def test_jumps_agree_with_minute_by_minute(expression: str) -> None:
    """The evaluator jumps over months, days and hours; a plain scan of every minute finds the
    same firings (four weeks from a time that is not on a minute boundary)."""
    cron = parse_cron(expression)
    start = t("2026-12-20 13:37:42")
    scanned = []
    minute = start.replace(second=0) + timedelta(minutes=1)
    while minute < start + timedelta(days=28):
        if cron.matches(minute):
            scanned.append(minute)
        minute += timedelta(minutes=1)
    jumped = []
    at = start
    while (at := cron.next_after(at)) < start + timedelta(days=28):
        jumped.append(at)
    assert jumped == scanned
    assert [cron.previous(m + timedelta(seconds=59)) for m in scanned] == scanned


def test_times_are_utc() -> None:
    """A naive time is UTC; an aware one is converted (3:00 UTC is 4:00 in Paris in winter)."""
    cron = parse_cron("0 3 * * *")
    paris = timezone(timedelta(hours=1))
    assert cron.next_after(datetime(2026, 12, 1, 3, 30, tzinfo=paris)) == t("2026-12-01 03:00")
    assert cron.next_after(datetime(2026, 12, 1, 2, 0)) == t("2026-12-01 03:00")


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("0 3 * *", "has 4 fields"),
        ("0 3 * * * *", "has 6 fields"),
        ("60 3 * * *", "minute field '60' has 60, outside 0-59"),
        ("0 24 * * *", "hour field '24' has 24, outside 0-23"),
        ("0 3 0 * *", "day of month field '0' has 0, outside 1-31"),
        ("0 3 * 13 *", "month field '13' has 13, outside 1-12"),
        ("0 3 * * 8", "day of week field '8' has 8, outside 0-7"),
        ("0 3 * * MOM", "day of week field 'MOM' has 'MOM', which is not a number or a name"),
        ("0 3 * * FRI-MON", "runs backwards"),
        ("*/0 * * * *", "has a step of 0"),
        ("0 3 ? * *", "cannot be read"),
        ("0 0 30 2 *", "can never fire"),
        ("@reboot", "unknown macro"),
        ("", "must be text"),
    ],
)
def test_bad_lines_are_refused_naming_the_field(expression: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=None) as caught:
        parse_cron(expression)
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"schedule": "0 3 * *"}, "refresh.schedule"),
        ({"on_data": ["Not A Name!"]}, "refresh.on_data[0]"),
        ({"on_data": []}, "refresh"),
        ({"schedule": "@daily", "alias": "Production!"}, "refresh.alias"),
        ({"schedule": "@daily", "every": "day"}, "refresh.every"),
    ],
)
def test_bad_declarations_name_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidManifest) as caught:
        RefreshDeclaration.from_dict(raw)
    assert caught.value.field == field


def test_declaration_defaults() -> None:
    d = RefreshDeclaration.from_dict({"schedule": "0  3 * * mon", "on_data": "applications"})
    assert d == RefreshDeclaration(schedule="0 3 * * mon", on_data=("applications",), alias="production")


# ---------------------------------------------------------------- the firing record


def test_a_firing_is_recorded_once_whoever_records_it(registry: Registry, db_url: str) -> None:
    """Two schedulers (two registry handles, as two processes would hold) record the same due
    time: one gets the event, the other None; another due time is a new firing. Then three
    handles race on one more due time, released together: exactly one records it. On every
    store."""
    v = registry.register("scored", lambda rows: [0 for _ in rows], capture=False)
    others = [
        Registry.open(db_url, artifacts=str(registry.artifact_root), actor=actor)
        for actor in ("bob@example.com", "carol@example.com", "ops@example.com")
    ]
    key = "schedule:production:2026-12-07T03:00:00.000000Z"
    raced = key.replace("07", "21")
    barrier = threading.Barrier(len(others))

    def race(handle: Registry) -> object:
        barrier.wait()
        return handle.record_refresh_trigger(v.uri, key=raced, trigger="schedule")

    try:
        first = registry.record_refresh_trigger(v.uri, key=key, trigger="schedule", details={"due": "x"})
        second = others[0].record_refresh_trigger(v.uri, key=key, trigger="schedule")
        later = others[0].record_refresh_trigger(v.uri, key=key.replace("07", "14"), trigger="schedule")
        with ThreadPoolExecutor(len(others)) as pool:
            outcomes = list(pool.map(race, others))
    finally:
        for handle in others:
            handle.close()
    assert first is not None and first.action == "refresh.triggered" and first.subject == v.uri
    assert first.data["key"] == key and first.data["due"] == "x"
    assert second is None
    assert later is not None and later.actor == "bob@example.com"
    assert sum(outcome is not None for outcome in outcomes) == 1
    fired = [e.data["key"] for e in registry.history(v.uri) if e.action == "refresh.triggered"]
    assert fired == [key, key.replace("07", "14"), raced]
    assert registry.verify_ledger().ok
    assert registry.check_state() == []  # a firing changes no governed state


# ---------------------------------------------------------------- the scheduler, without a run


def test_a_fired_refresh_that_cannot_run_is_recorded_failed(tmp_path: Path) -> None:
    """A version registered here (under pytest: no command is recorded, so it cannot be run
    again) declares a schedule and a data set. The scheduler watches it only while it holds
    @production, fires the due time once, and records that the run failed, with the step.
    (SQLite only: the firing record itself is tested on every store above.)"""
    db_url, artifacts = f"sqlite:///{tmp_path / 'registry.db'}", str(tmp_path / "artifacts")
    enrol_cast(db_url, artifacts)
    registry = Registry.open(db_url, artifacts=artifacts, actor="alice@example.com")
    train = registry.datasets.register("apps", pd.DataFrame({"income": [10.0, 20.0], "defaulted": [1, 0]}))
    manifest = {"refresh": {"schedule": "0 3 * * MON", "on_data": ["apps"]}}
    v = registry.register(
        "scored", lambda rows: [0 for _ in rows], manifest=manifest, datasets={"train": train.uri}
    )
    clock = [datetime.now(UTC)]
    scheduler = Scheduler(registry, clock=lambda: clock[0])
    assert scheduler.tick() == [] and scheduler.declarations() == []  # not deployed: not watched

    officer = Registry.open(db_url, artifacts=str(registry.artifact_root), actor="bob@example.com")
    try:
        officer.approve(v.uri, reason="reviewed")
        officer.deploy(v.uri)
    finally:
        officer.close()
    assert scheduler.tick() == []  # the last due time is older than the deployment
    where = ["--registry", db_url, "--artifacts", artifacts, "--json"]
    listed = CliRunner().invoke(main, ["scheduler", "--list", *where])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == [
        {"source": v.uri, "alias": "production", "schedule": "0 3 * * MON", "on_data": ["apps"]}
    ]
    once = CliRunner().invoke(main, ["scheduler", "--once", *where])
    assert (once.exit_code, json.loads(once.stdout)) == (0, [])  # nothing due on the real clock
    assert [(s, a, d.schedule) for s, a, d in scheduler.declarations()] == [
        (v.uri, "production", "0 3 * * MON")
    ]
    clock[0] = parse_cron("0 3 * * MON").next_after(clock[0]) + timedelta(seconds=1)
    [fired] = scheduler.tick()
    assert fired.trigger == "schedule" and fired.candidate is None
    assert fired.error is not None and "failed at step" in fired.error
    assert Firing.from_dict(json.loads(json.dumps(fired.to_dict()))) == fired  # what --json prints
    assert scheduler.tick() == []
    actions = [
        (e.action, e.data.get("key")) for e in registry.history(v.uri) if e.action.startswith("refresh.")
    ]
    assert actions == [("refresh.triggered", fired.key), ("refresh.failed", fired.key)]
    assert [x.version for x in registry.list_versions("scored").items] == [v.version]  # no candidate
    assert registry.verify().ok  # the firings are signed acts a contributor may make

    # the long-running loop (what `modelledger scheduler` runs): a week later it fires again
    clock[0] += timedelta(days=7)
    stop = threading.Event()
    seen: list[Firing] = []

    def on_firing(firing: Firing) -> None:
        seen.append(firing)
        stop.set()

    loop = threading.Thread(
        target=scheduler.run, kwargs={"interval": 0.05, "stop": stop, "on_firing": on_firing}
    )
    loop.start()
    loop.join(timeout=30)
    stop.set()
    assert not loop.is_alive()
    assert [f.due for f in seen] == [to_text(parse_cron("0 3 * * MON").previous(clock[0]))]
    registry.close()


def test_a_manifest_is_checked_with_the_same_reading() -> None:
    """Registration reads ``refresh`` as the scheduler will: a line that can never fire is
    refused then, with the field, not discovered at 3 am."""
    with pytest.raises(InvalidManifest) as caught:
        Manifest.from_dict({"refresh": {"schedule": "0 0 30 2 *"}})
    assert caught.value.field == "refresh.schedule" and "can never fire" in str(caught.value)
    kept = Manifest.from_dict({"refresh": {"schedule": "@weekly", "on_data": ["apps"], "alias": "champion"}})
    assert RefreshDeclaration.from_manifest(kept.to_dict()) == RefreshDeclaration(
        "@weekly", ("apps",), "champion"
    )


def test_the_server_can_run_the_scheduler(tmp_path: Path) -> None:
    """``modelledger server --scheduler SECONDS``: the server ticks a scheduler too. A data set
    the deployed version declares gets a new version; the server fires the refresh (which
    cannot run: the version was registered here, with no command) and records it, once."""
    db_url, artifacts = f"sqlite:///{tmp_path / 'registry.db'}", str(tmp_path / "artifacts")
    enrol_cast(db_url, artifacts)
    registry = Registry.open(db_url, artifacts=artifacts, actor="alice@example.com")
    officer = Registry.open(db_url, artifacts=artifacts, actor="bob@example.com")
    train = registry.datasets.register("apps", pd.DataFrame({"income": [10.0, 20.0], "defaulted": [1, 0]}))
    manifest = {"refresh": {"on_data": ["apps"]}}
    v = registry.register(
        "scored", lambda rows: [0 for _ in rows], manifest=manifest, datasets={"train": train.uri}
    )
    officer.approve(v.uri, reason="reviewed")
    officer.deploy(v.uri)
    newer = registry.datasets.register("apps", pd.DataFrame({"income": [30.0, 40.0], "defaulted": [0, 1]}))

    def fired() -> list[tuple[str, object]]:
        return [
            (e.action, e.data.get("data")) for e in registry.history(v.uri) if e.action.startswith("refresh.")
        ]

    with serve_app(create_app(registry, options=ServerOptions(scheduler=0.05, access_log=False))):
        deadline = time.monotonic() + 20
        while len(fired()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # a few more ticks: nothing more fires
    assert fired() == [("refresh.triggered", {"train": newer.uri}), ("refresh.failed", None)]
    officer.close()
    registry.close()
