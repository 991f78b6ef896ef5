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
        out, err = p.communicate(timeout=240)
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
