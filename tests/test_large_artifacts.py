from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, os, sys
from modelledger import Registry

src, url, art = sys.argv[1], sys.argv[2], sys.argv[3]
# A child inherits its parent's peak RSS: reset the high-water mark, then read VmHWM.
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
reg = Registry.open(url, artifacts=art)
reg.init()
calls = []
v = reg.register("big", src, capture=False, progress=lambda done, total: calls.append((done, total)))
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
rss_mb = int(hwm.split()[1]) / 1024
print(json.dumps({"rss_mb": rss_mb, "size": v.files[0].size, "calls": len(calls), "last": calls[-1]}))
"""


def test_two_gigabyte_artefact_registers_in_bounded_memory(tmp_path: Path) -> None:
    src = tmp_path / "weights"
    src.mkdir()
    size = 2 * 1024**3
    with (src / "weights.bin").open("wb") as fh:
        # Real, non-zero content at both ends; a sparse middle keeps the test fast to set up.
        fh.write(b"\x5a" * 1024 * 1024)
        fh.truncate(size - 1024 * 1024)
        fh.seek(size - 1024 * 1024)
        fh.write(b"\xa5" * 1024 * 1024)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(src), f"sqlite:///{tmp_path / 'r.db'}", str(tmp_path / "art")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["size"] == size
    assert result["last"] == [size, size]  # progress reached the total
    assert result["calls"] >= 2048  # reported chunk by chunk, not once at the end
    assert result["rss_mb"] < 200, result
