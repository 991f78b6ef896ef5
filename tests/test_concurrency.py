from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from modelledger import Registry

WORKER = r"""
import json, sys, time
from modelledger import Registry

url, artifacts, start, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
reg = Registry.open(url, artifacts=artifacts, actor="worker")
while time.time() < start:
    time.sleep(0.001)
numbers = []
for _ in range(n):
    # Same second, same folder key for every worker: folders must still never collide.
    v = reg.register("contended", lambda rows: rows, capture=False)
    numbers.append([v.version, v.folder])
print(json.dumps(numbers))
"""


def test_four_processes_get_one_hundred_consecutive_numbers(db_url: str, tmp_path: Path) -> None:
    artifacts = str(tmp_path / "artifacts")
    start = time.time() + 3.0  # every worker is imported and waiting before the gun
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, db_url, artifacts, str(start), "25"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)  # a guard against a hang, not a speed target
        assert p.returncode == 0, err
        results.extend(json.loads(out))
    numbers = sorted(n for n, _ in results)
    assert numbers == list(range(1, 101))
    assert len({folder for _, folder in results}) == 100
    reg = Registry.open(db_url, artifacts=artifacts)
    assert reg.get_model("contended").latest_version == 100
    report = reg.verify()
    assert report.ok, report.problems
    assert report.versions_checked == 100


GOVERNOR = r"""
import json, sys, time
from modelledger import Registry

url, artifacts, start, actor, versions = sys.argv[1:6]
start = float(start)
reg = Registry.open(url, artifacts=artifacts, actor=actor)
while time.time() < start:
    time.sleep(0.001)
for n in json.loads(versions):
    uri = f"models:/credit-risk/{n}"
    reg.approve(uri, reason=f"reviewed by {actor}")
    reg.deploy(uri, reason=f"{actor} ships {n}")  # every worker moves @production and @rollback
    reg.set_alias("credit-risk", "champion", n)
"""


def test_concurrent_governance_keeps_one_chain(db_url: str, tmp_path: Path) -> None:
    artifacts = str(tmp_path / "artifacts")
    reg = Registry.open(db_url, artifacts=artifacts, actor="alice@example.com")
    doc = {"gates": ["auc >= 0.80 on holdout"], "metrics": {"auc_holdout": 0.86}}
    for _ in range(8):
        reg.register("credit-risk", lambda rows: rows, manifest=doc, capture=False)
    head = reg.ledger_head()[0]
    # four other members than the registrant (four-eyes), two versions each, all at once
    workers = {"bob@example.com": [1, 2], "carol@example.com": [3, 4], "ops@example.com": [5, 6]}
    workers["officer@example.com"] = [7, 8]
    start = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", GOVERNOR, db_url, artifacts, str(start), actor, json.dumps(ns)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for actor, ns in workers.items()
    ]
    for p in procs:
        _out, err = p.communicate(timeout=600)  # a guard against a hang, not a speed target
        assert p.returncode == 0, err
    events = reg.events_after(head, limit=1000)
    assert [e.seq for e in events] == list(range(head + 1, head + 1 + len(events)))  # no gap, no fork
    approvals = [e for e in events if e.action == "version.approved"]
    assert sorted(e.subject for e in approvals) == sorted(f"models:/credit-risk/{n}" for n in range(1, 9))
    moves = reg.alias_history("credit-risk", "production")
    assert len(moves) == 8
    # the alias is where the last move in the chain put it, and every version was deployed once
    assert [m.seq for m in moves] == sorted(m.seq for m in moves)
    assert reg.get_version("models:/credit-risk@production").version == moves[-1].version
    assert sorted(m.version for m in moves) == list(range(1, 9))
    assert (
        reg.get_version("models:/credit-risk@champion").version
        == reg.alias_history("credit-risk", "champion")[-1].version
    )
    report = reg.verify()
    assert report.ok, report.problems
    reg.close()
