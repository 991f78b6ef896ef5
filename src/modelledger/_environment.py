"""Isolated Python environments with a version's recorded Python and exact dependency versions.

:func:`build_environment` makes a fresh virtual environment with the interpreter of the
recorded version (found on this machine, never downloaded) and installs every recorded
``name==version`` into it, with `uv <https://docs.astral.sh/uv/>`_ when it is installed (it is
in modelledger's ``dev`` extra) and pip otherwise. modelledger itself is installed from source:
the checkout of the recorded revision when that is a modelledger source tree, else the source
of the modelledger that runs this (see :func:`modelledger_source`).

Environments are cached under a folder (``$MODELLEDGER_ENV_CACHE``, else
``$XDG_CACHE_HOME/modelledger/environments``) by :func:`environment_digest` of (Python
version, sorted pins, modelledger's source), so a second run with the same pins starts at once.
A build holds a lock on its cache entry (two processes never build one environment twice, or
use one half-built), and an entry is used only once its marker file is written, last.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RunFailed

__all__ = [
    "Environment",
    "build_environment",
    "default_cache_dir",
    "environment_digest",
    "find_python",
    "installed_packages",
    "modelledger_source",
    "normalise_name",
]

MARKER = "modelledger-environment.json"
_STEP = "environment"
# modelledger is installed from source, not by its recorded version number (which names no
# particular revision, and is not on every index)
_OWN_NAME = "modelledger"
_VERSION = re.compile(r"Python (\d+\.\d+\.\d+\S*)")


@dataclass(frozen=True, slots=True)
class Environment:
    """A ready environment: ``python`` is its interpreter; ``cached`` says it was found ready.

    ``installer`` is ``"uv"`` or ``"pip"``; ``modelledger_from`` says where modelledger was
    installed from (``"checkout of <revision>"`` or ``"running source <folder>"``).
    """

    folder: Path
    python: Path
    digest: str
    python_version: str
    packages: int
    cached: bool
    installer: str
    modelledger_from: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "python": str(self.python),
            "digest": self.digest,
            "python_version": self.python_version,
            "packages": self.packages,
            "cached": self.cached,
            "installer": self.installer,
            "modelledger_from": self.modelledger_from,
            "seconds": round(self.seconds, 3),
        }


def normalise_name(name: str) -> str:
    """A distribution name as installers compare them (PEP 503): ``Typing_Extensions`` ->
    ``typing-extensions``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def environment_digest(python_version: str, pins: Mapping[str, str], source_id: str) -> str:
    """``sha256:...`` of the Python version, the sorted pins and modelledger's source identity.

    >>> environment_digest("3.11.7", {"numpy": "2.1.0"}, "git:abc")[:7]
    'sha256:'
    """
    body = {
        "python": python_version,
        "pins": sorted((normalise_name(n), v) for n, v in pins.items() if normalise_name(n) != _OWN_NAME),
        "modelledger": source_id,
    }
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$MODELLEDGER_ENV_CACHE``, else ``$XDG_CACHE_HOME/modelledger/environments`` (``~/.cache``)."""
    given = os.environ.get("MODELLEDGER_ENV_CACHE")
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelledger" / "environments"


def _uv() -> str | None:
    """uv's executable: beside this interpreter (installed in the same environment), else on PATH."""
    import shutil  # only environment builds look for tools: not at import time

    beside = Path(sys.executable).with_name("uv")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("uv")


def _run(args: list[str], *, what: str, env: Mapping[str, str] | None = None) -> str:
    """Run a build command; its failure is the environment step's, with the tool's last words."""
    import subprocess  # only environment builds run tools: not at import time

    try:
        done = subprocess.run(
            args, capture_output=True, text=True, check=False, env=None if env is None else dict(env)
        )
    except OSError as exc:
        raise RunFailed(_STEP, f"{what}: cannot run {args[0]}: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-12:])
        raise RunFailed(_STEP, f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def _python_version(executable: str) -> str | None:
    import subprocess  # only environment builds ask interpreters: not at import time

    try:
        done = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = _VERSION.search(done.stdout + done.stderr)
    return found.group(1) if found and done.returncode == 0 else None


def _candidates(version: str) -> Iterator[str]:
    """Interpreters that may be ``version``: this one, ``pythonX.Y`` on PATH, pyenv's, uv's."""
    import shutil  # only environment builds look for interpreters: not at import time

    # the base interpreter first: a virtual environment's would do, but says less in the report
    base = getattr(sys, "_base_executable", None)
    if isinstance(base, str):
        yield base
    yield sys.executable
    major_minor = ".".join(version.split(".")[:2])
    for name in (f"python{major_minor}", "python3", "python"):
        found = shutil.which(name)
        if found:
            yield found
    roots = [os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")]
    for root in roots:
        for name in (f"python{major_minor}", "python3"):
            path = Path(root, "versions", version, "bin", name)
            if path.is_file():
                yield str(path)
    for prefix in ("/usr/bin", "/usr/local/bin", "/opt/homebrew/bin"):
        path = Path(prefix, f"python{major_minor}")
        if path.is_file():
            yield str(path)


def find_python(version: str, *, uv: str | None = None) -> str:
    """The path of a Python ``version`` (``3.11.7``: that exact release) on this machine.

    Nothing is downloaded. A version the machine does not have raises
    :class:`~modelledger.errors.RunFailed` naming it and the versions found.
    """
    seen: dict[str, str] = {}
    for candidate in dict.fromkeys(_candidates(version)):
        found = _python_version(candidate)
        if found is None:
            continue
        seen.setdefault(found, candidate)
        if found == version:
            return candidate
    if uv is not None:
        import subprocess  # only environment builds ask uv: not at import time

        done = subprocess.run(
            [uv, "python", "find", "--no-python-downloads", version],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
        )
        path = done.stdout.strip()
        if done.returncode == 0 and path and _python_version(path) == version:
            return path
    others = ", ".join(sorted(seen)) or "none"
    raise RunFailed(
        _STEP,
        f"the version was trained with Python {version}, which is not installed on this machine "
        f"(found: {others}); install Python {version} (for example `uv python install {version}` "
        "or pyenv), then run again",
    )


def modelledger_source(checkout: Path | None, revision: str | None) -> tuple[Path, str, str]:
    """(folder to install modelledger from, its identity for the cache digest, a description).

    The checkout of the recorded revision when it is modelledger's own source tree (the
    training code lives in modelledger's repository, as the demo's does); otherwise the source
    tree of the modelledger running now, identified by a digest of its files.
    """
    if checkout is not None and _is_modelledger_tree(checkout):
        return checkout, f"git:{revision}", f"checkout of {revision}"
    here = Path(__file__).resolve().parent  # .../src/modelledger
    root = here.parent.parent if here.parent.name == "src" else here.parent
    if not _is_modelledger_tree(root):
        raise RunFailed(
            _STEP,
            "modelledger must be installed into the environment from source, but the running "
            f"modelledger ({here}) is not in a source tree, and the recorded revision is not "
            "modelledger's repository",
        )
    digest = hashlib.sha256()
    for path in sorted(here.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(here).as_posix().encode() + b"\0" + path.read_bytes())
    digest.update((root / "pyproject.toml").read_bytes())
    return root, f"source:{digest.hexdigest()[:32]}", f"running source {root}"


def _staged_source(root: Path, dest: Path) -> Path:
    """A copy of what building modelledger from ``root`` reads: pyproject.toml, the readme and
    licence files, and ``src/`` without caches and build leftovers."""
    import shutil  # only environment builds copy sources: not at import time

    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for path in root.iterdir():
        if path.is_file() and (
            path.name == "pyproject.toml" or path.name.upper().startswith(("README", "LICEN"))
        ):
            shutil.copy2(path, dest / path.name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    shutil.copytree(root / "src", dest / "src", ignore=ignore)
    return dest


def _is_modelledger_tree(folder: Path) -> bool:
    project = folder / "pyproject.toml"
    if not project.is_file() or not (folder / "src" / "modelledger" / "__init__.py").is_file():
        return False
    return bool(re.search(r'(?m)^name\s*=\s*"modelledger"', project.read_text(encoding="utf-8")))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (a lock file), held while the block runs."""
    import fcntl  # POSIX file locks: only environment builds take them

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _interpreter(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def installed_packages(python: str | os.PathLike[str]) -> dict[str, str]:
    """Every distribution installed for interpreter ``python``: name (lower-cased) -> version,
    as a registration there records them (``Manifest.dependencies``)."""
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions() "
        "if d.metadata['Name']}))"
    )
    out = _run([os.fspath(python), "-c", code], what="listing the environment's packages")
    found: dict[str, str] = json.loads(out)
    return found


def build_environment(
    *,
    python_version: str,
    pins: Mapping[str, str],
    source: tuple[Path, str, str],
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Environment:
    """A ready environment with Python ``python_version`` and exactly ``pins`` (plus
    modelledger from ``source``, see :func:`modelledger_source`), from the cache or built now.

    ``progress`` is told of each sub-step (finding Python, creating, installing). A failure
    raises :class:`~modelledger.errors.RunFailed` (step ``environment``) and leaves no usable
    cache entry behind.
    """
    import shutil  # only environment builds remove half-built folders: not at import time

    started = time.monotonic()
    say = progress or (lambda _message: None)
    folder_src, source_id, source_text = source
    digest = environment_digest(python_version, pins, source_id)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = digest.split(":", 1)[1][:24]
    folder = cache / name
    uv = _uv()
    with _locked(cache / f"{name}.lock"):
        ready = _read_marker(folder)
        if ready is not None:
            say(f"cached environment {name}")
            return Environment(
                folder=folder,
                python=_interpreter(folder),
                digest=digest,
                python_version=python_version,
                packages=int(ready.get("packages", 0)),
                cached=True,
                installer=str(ready.get("installer", "")),
                modelledger_from=str(ready.get("modelledger_from", source_text)),
                seconds=time.monotonic() - started,
            )
        if folder.is_symlink():  # an alias of a build that did not finish
            folder.unlink()
        shutil.rmtree(folder, ignore_errors=True)  # a build that died half-way
        try:
            say(f"finding Python {python_version}")
            base = find_python(python_version, uv=uv)
            wanted = {normalise_name(n): v for n, v in pins.items() if normalise_name(n) != _OWN_NAME}
            requirements = cache / f"{name}.requirements.txt"
            requirements.write_text("".join(f"{n}=={v}\n" for n, v in sorted(wanted.items())))
            pip: list[str] = []
            if uv is not None:
                installer = "uv"
                say(f"creating the environment with uv ({base})")
                _run([uv, "venv", "--quiet", "--python", base, str(folder)], what="creating the environment")
                install = [uv, "pip", "install", "--quiet", "--python", str(_interpreter(folder))]
                env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
            else:
                installer = "pip"
                say(f"creating the environment with venv ({base})")
                _run([base, "-m", "venv", str(folder)], what="creating the environment")
                pip = [str(_interpreter(folder)), "-m", "pip", "--disable-pip-version-check"]
                install = [*pip, "install", "--quiet"]
                env = dict(os.environ)
            env.pop("VIRTUAL_ENV", None)
            env.pop("PYTHONPATH", None)
            if wanted:
                say(f"installing {len(wanted)} pinned packages with {installer}")
                _run(
                    [*install, "-r", str(requirements)],
                    what=f"installing the {len(wanted)} recorded packages",
                    env=env,
                )
            say(f"installing modelledger from the {source_text}")
            # built from a copy: a build writes build/ and *.egg-info/ beside the sources, and
            # the running source tree is the user's own checkout
            staged = _staged_source(folder_src, cache / f"{name}.source")
            try:
                _run([*install, "--no-deps", str(staged)], what="installing modelledger", env=env)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
            if installer == "pip":
                # venv seeds pip (and setuptools before Python 3.12): not recorded, not wanted
                seeded = [n for n in ("setuptools", "wheel", "pip") if n not in wanted]
                if seeded:
                    say(f"removing what venv added: {', '.join(seeded)}")
                    _run(
                        [*pip, "uninstall", "--yes", "--quiet", *seeded],
                        what="removing venv's seed packages",
                        env=env,
                    )
            # The same environment is what a registration made in it records (its pins and
            # whatever they brought in): found again under that digest too.
            installed = installed_packages(_interpreter(folder))
            alias = environment_digest(python_version, installed, source_id).split(":", 1)[1][:24]
            if alias != name and not (cache / alias).exists():
                (cache / alias).symlink_to(name, target_is_directory=True)
            marker = {
                "digest": digest,
                "python": python_version,
                "pins": dict(sorted(wanted.items())),
                "packages": len(wanted) + 1,
                "installer": installer,
                "modelledger_from": source_text,
            }
            # written last: an entry without it is a build that did not finish
            (folder / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            (cache / f"{name}.requirements.txt").unlink(missing_ok=True)
    return Environment(
        folder=folder,
        python=_interpreter(folder),
        digest=digest,
        python_version=python_version,
        packages=len(wanted) + 1,
        cached=False,
        installer=installer,
        modelledger_from=source_text,
        seconds=time.monotonic() - started,
    )


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return found if _interpreter(folder).exists() else None
