"""Facts about the machine and packages, shared by the benchmark scripts."""

from __future__ import annotations

import contextlib
import platform
import subprocess
from pathlib import Path


def dist_version(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def fs_type(path: Path) -> str:
    """The filesystem holding ``path``, as 'ext4 (/dev/vda on /)'."""
    best, fstype = "", "unknown"
    target = str(path.resolve())
    with contextlib.suppress(OSError), open("/proc/mounts") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 3 and target.startswith(parts[1]) and len(parts[1]) > len(best):
                best, fstype = parts[1], f"{parts[2]} ({parts[0]} on {parts[1]})"
    return fstype


def git_state(repo: Path) -> str | None:
    """The checkout's short revision, with '+dirty src' when src/ has uncommitted changes."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=repo, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "src"],
            capture_output=True,
            text=True,
            cwd=repo,
            check=True,
        ).stdout.strip()
        return rev + ("+dirty src" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def compile_bytecode() -> dict[str, object]:
    """Compile modelledger's modules to bytecode, as ``pip install`` does for a wheel.

    An editable checkout has no ``__pycache__`` until something imports it with bytecode
    writing on, and a shell with ``PYTHONDONTWRITEBYTECODE=1`` never writes one: every fresh
    process then compiles the whole package from source, which a user who installed the
    package never pays (and the other side's installed packages never pay either). Timing
    start-up or import in that state measures the compiler, so the benchmarks compile first.
    """
    import compileall
    import importlib.util
    import os

    spec = importlib.util.find_spec("modelledger")
    if spec is None or spec.origin is None:
        return {"compiled": False, "reason": "modelledger is not importable"}
    package = Path(spec.origin).parent
    ok = compileall.compile_dir(str(package), quiet=1)
    return {
        "compiled": bool(ok),
        "package": str(package),
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
    }
