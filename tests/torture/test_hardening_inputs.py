"""Hardened inputs: values that become paths, manifest limits, symlinked folders.

Every refusal is checked as a user would: the error type, the field (or path) it names, and
that nothing was written: no model, no version, no ledger event and no file under the
artefact root (nor anywhere else under the test's folder).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import modelledger._registration as registration
from modelledger import (
    InvalidInput,
    InvalidManifest,
    Manifest,
    ManifestLimits,
    NotFound,
    Registry,
    SourceInfo,
)

# A "billion laughs" YAML document: 258 bytes that a loader honouring aliases expands into
# 9**7 (4.8 million) strings in params.
BILLION_LAUGHS = (
    "params:\n"
    "  a: &a [l,l,l,l,l,l,l,l,l]\n"
    "  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
)


def files_under(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def footprint(reg: Registry, root: Path) -> tuple[Any, ...]:
    """What a user could see of a registry: models, versions, ledger events, artefact files."""
    models = [m.name for m in reg.iter_models()]
    versions = [(m, [v.version for v in reg.list_versions(m)]) for m in models]
    return models, versions, [(e.seq, e.action) for e in reg.audit(limit=1000)], files_under(root)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"  # the `registry` fixture's artefact root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder of plain files to register."""
    src = tmp_path / "export"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"\x01\x02\x03")
    return src


def assert_nothing_written(reg: Registry, root: Path, before: tuple[Any, ...], name: str = "m") -> None:
    assert footprint(reg, root) == before
    with pytest.raises(NotFound):
        reg.get_model(name)


# ---------------------------------------------------------------------- 1. path safety


@pytest.mark.parametrize("given_as", ["mapping", "yaml file", "json file", "Manifest"])
def test_a_revision_that_climbs_out_of_the_model_folder_is_refused(
    registry: Registry, root: Path, folder: Path, tmp_path: Path, given_as: str
) -> None:
    repo = "https://git.example.com/x.git"
    doc = {"source": {"repo_url": repo, "revision": "/../../victim"}}
    manifest: Any = doc
    if given_as == "yaml file":
        manifest = tmp_path / "manifest.yaml"
        manifest.write_text(f'source: {{repo_url: "{repo}", revision: "/../../victim"}}\n')
    elif given_as == "json file":
        manifest = tmp_path / "manifest.json"
        manifest.write_text(json.dumps(doc))
    elif given_as == "Manifest":
        manifest = Manifest(source=SourceInfo(repo_url=repo, revision="/../../victim"))
    before = footprint(registry, root)
    with pytest.raises(InvalidManifest) as err:
        registry.register("m", folder, manifest=manifest)
    assert err.value.field == "source.revision"
    assert "'/../../victim'" in str(err.value)
    assert_nothing_written(registry, root, before)
    assert not any("victim" in p for p in files_under(tmp_path))  # nowhere at all


@pytest.mark.parametrize(
    "revision",
    ["ab\x00cd", "feature/x", "..", "a..b", ".hidden", "-rf", "abc\n", "tab\there", "x" * 129, "rev\\x"],
)
def test_a_revision_that_is_not_a_safe_ref_is_an_invalid_manifest(
    registry: Registry, root: Path, folder: Path, revision: str
) -> None:
    before = footprint(registry, root)
    with pytest.raises(InvalidManifest) as err:
        registry.register("m", folder, manifest={"source": {"revision": revision}})
    assert err.value.field == "source.revision"
    assert_nothing_written(registry, root, before)


@pytest.mark.parametrize(
    ("revision", "folder_key"),
    [
        ("3f2a9c1e5b7d4a6f8e0c2b4d6f8a0c2e4b6d8f0a", "git-3f2a9c1e5b7d"),
        ("v1.2.0", "git-v1.2.0"),
        ("HEAD~3", "git-HEAD~3"),
        ("release-2026.11+build_7", "git-release-2026"),
    ],
)
def test_git_revisions_and_ref_like_text_still_name_the_folder(
    registry: Registry, folder: Path, revision: str, folder_key: str
) -> None:
    v = registry.register("m", folder, manifest={"source": {"revision": revision}})
    assert v.manifest["source"]["revision"] == revision
    assert v.folder == f"models/m/{folder_key}"
    assert registry.verify().ok


@pytest.mark.parametrize("execution_id", ["../../victim", "a/b", "x\x00y", "..", "-x", "x" * 129])
def test_an_unsafe_execution_id_is_refused(
    registry: Registry, root: Path, folder: Path, execution_id: str
) -> None:
    before = footprint(registry, root)
    with pytest.raises(InvalidInput, match="invalid execution id"):
        registry.register("m", folder, execution_id=execution_id)
    assert_nothing_written(registry, root, before)


@pytest.mark.parametrize(
    ("naming", "manifest", "execution_id"),
    [
        ("git", Manifest(source=SourceInfo(revision="../../../x")), None),
        ("git", Manifest(source=SourceInfo(revision="a\x00b")), None),
        ("execution", Manifest(), "../../x"),
    ],
)
def test_the_folder_key_is_checked_however_its_parts_arrived(
    naming: registration.FolderNaming, manifest: Manifest, execution_id: str | None
) -> None:
    # Defence in depth: the key is one path segment even if a revision or id got past entry.
    with pytest.raises(InvalidInput):
        registration._folder_key(naming, manifest, execution_id)


@pytest.mark.parametrize(
    "change",
    [
        {"folder": "models/m/../../../victim"},
        {"folder": "models/other/run-run-1"},
        {"folder": "models/m/run-run-1/deeper"},
        {"model": "../victim"},
    ],
)
def test_a_hand_made_upload_with_an_unsafe_name_or_folder_is_not_committed(
    registry: Registry, root: Path, folder: Path, change: dict[str, str]
) -> None:
    uploaded = registry.upload("m", folder, execution_id="run-1")
    before = footprint(registry, root)
    with pytest.raises(InvalidInput, match="invalid"):
        registry.create_version(dataclasses.replace(uploaded, **change))
    assert_nothing_written(registry, root, before)
    assert registry.create_version(uploaded).folder == "models/m/run-run-1"


def test_an_unsafe_model_name_is_refused(registry: Registry, root: Path, folder: Path) -> None:
    before = footprint(registry, root)
    for name in ("../victim", "a/b", "m\x00", ".."):
        with pytest.raises(InvalidInput, match="invalid model name"):
            registry.register(name, folder)
    assert footprint(registry, root) == before


# ---------------------------------------------------------------------- 2. manifest limits


def test_a_billion_laughs_manifest_is_refused_quickly(
    registry: Registry, root: Path, folder: Path, tmp_path: Path
) -> None:
    assert len(BILLION_LAUGHS.encode()) == 258
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    before = footprint(registry, root)
    started = time.monotonic()
    with pytest.raises(InvalidManifest) as err:
        registry.register("m", folder, manifest=path)
    assert time.monotonic() - started < 5  # expanded, it would not end (or fit in memory)
    assert err.value.field == "params"
    assert "anchor or alias" in err.value.problem
    assert_nothing_written(registry, root, before)


@pytest.mark.parametrize(
    "text",
    [
        "params: &p {C: 1}\n",  # an anchor alone
        "settings: {base: &b {lr: 1}, run: *b}\n",
        "settings:\n  base: &b {lr: 1}\n  run:\n    <<: *b\n    epochs: 3\n",  # a merge key
    ],
)
def test_yaml_anchors_and_aliases_are_refused(
    registry: Registry, root: Path, folder: Path, tmp_path: Path, text: str
) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text(text)
    before = footprint(registry, root)
    with pytest.raises(InvalidManifest) as err:
        registry.register("m", folder, manifest=path)
    assert err.value.field == text.split(":", 1)[0]
    assert "anchor or alias" in err.value.problem
    assert_nothing_written(registry, root, before)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("given_as", ["mapping", "params argument", "yaml file", "Manifest"])
def test_params_nested_3000_deep_are_refused_naming_the_field(
    registry: Registry, root: Path, folder: Path, tmp_path: Path, given_as: str
) -> None:
    deep = _nested(3000)
    kwargs: dict[str, Any] = {"manifest": {"params": deep}}
    if given_as == "params argument":
        kwargs = {"params": deep}
    elif given_as == "yaml file":
        path = tmp_path / "deep.yaml"
        path.write_text("params: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n")
        kwargs = {"manifest": path}
    elif given_as == "Manifest":
        kwargs = {"manifest": Manifest(params=deep)}
    before = footprint(registry, root)
    with pytest.raises(InvalidManifest) as err:
        registry.register("m", folder, **kwargs)
    assert err.value.field == "params"
    assert "deeper than the limit of 32 levels" in err.value.problem
    assert_nothing_written(registry, root, before)


def test_a_json_manifest_nested_too_deep_for_the_parser_is_an_invalid_manifest(
    registry: Registry, root: Path, folder: Path, tmp_path: Path
) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"params": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}")
    before = footprint(registry, root)
    with pytest.raises(InvalidManifest) as err:
        registry.register("m", folder, manifest=path)
    assert err.value.field == "(document)"
    assert "deeper than the limit" in err.value.problem
    assert_nothing_written(registry, root, before)


def test_nesting_up_to_the_limit_is_kept(registry: Registry, folder: Path) -> None:
    v = registry.register("m", folder, manifest={"settings": _nested(32)}, params=_nested(32))
    assert v.manifest["settings"] == _nested(32)
    assert v.manifest["params"] == _nested(32)


def test_a_manifest_file_over_the_size_limit_is_refused_unread(
    registry: Registry, root: Path, folder: Path, tmp_path: Path
) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("description: " + "x" * (1024 * 1024) + "\n")
    before = footprint(registry, root)
    with pytest.raises(InvalidManifest) as err:
        registry.register("m", folder, manifest=path)
    assert err.value.field == "(file)"
    assert "larger than the limit of 1048576 bytes" in err.value.problem
    assert_nothing_written(registry, root, before)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"description": "d" * (64 * 1024 + 1)}, "description"),
        ({"params": {"notes": "n" * (64 * 1024 + 1)}}, "params.notes"),
        ({"settings": {"layers": [1, 2, "s" * (64 * 1024 + 1)]}}, "settings.layers[2]"),
        ({"params": {"k" * (64 * 1024 + 1): 1}}, "params"),
    ],
)
def test_a_string_over_the_length_limit_is_refused_naming_the_field(
    registry: Registry, root: Path, folder: Path, doc: dict[str, Any], field: str
) -> None:
    before = footprint(registry, root)
    with pytest.raises(InvalidManifest) as err:
        registry.register("m", folder, manifest=doc)
    assert err.value.field == field
    assert "more than the limit of 65536" in err.value.problem
    assert_nothing_written(registry, root, before)
    # 64 KiB itself is fine
    assert registry.register("m", folder, manifest={"description": "d" * 64 * 1024}).version == 1


def test_too_many_keys_are_refused(registry: Registry, root: Path, folder: Path) -> None:
    before = footprint(registry, root)
    with pytest.raises(InvalidManifest) as err:
        registry.register("m", folder, params={f"p{i}": i for i in range(100_001)})
    assert err.value.field == "params"
    assert "more than the limit of 100000 keys" in err.value.problem
    assert_nothing_written(registry, root, before)


def test_limits_are_configurable_per_registry(db_url: str, tmp_path: Path, folder: Path) -> None:
    root = tmp_path / "custom-artifacts"
    limits = ManifestLimits(max_file_bytes=200, max_string_length=10, max_depth=2, max_entries=5, max_tags=2)
    reg = Registry.open(db_url, artifacts=str(root), actor="alice@example.com", manifest_limits=limits)
    before = footprint(reg, root)
    small = tmp_path / "small.yaml"
    small.write_text("params: {C: 1}\n" + "#" * 300 + "\n")
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"manifest": small}, "(file)", "larger than the limit of 200 bytes"),
        ({"manifest": {"description": "x" * 11}}, "description", "more than the limit of 10"),
        ({"params": {"a": {"b": {"c": 1}}}}, "params", "deeper than the limit of 2 levels"),
        ({"metrics": {f"m{i}": 0.5 for i in range(6)}}, "metrics", "limit of 5 keys"),
    ]
    for kwargs, field, problem in cases:
        with pytest.raises(InvalidManifest) as err:
            reg.register("m", folder, **kwargs)
        assert (err.value.field, problem in err.value.problem) == (field, True)
    with pytest.raises(InvalidInput, match="at most 2 tags"):
        reg.create_model("m", tags={"a": "1", "b": "2", "c": "3"})
    assert_nothing_written(reg, root, before)
    assert reg.register("m", folder, params={"a": {"b": 1}}).manifest["params"] == {"a": {"b": 1}}
    reg.close()


@pytest.mark.parametrize("bad", [{"max_depth": 0}, {"max_file_bytes": -1}, {"max_tags": True}])
def test_limits_must_be_positive_integers(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="must be a positive integer"):
        ManifestLimits(**bad)


def test_model_tags_have_count_and_length_limits(registry: Registry, root: Path) -> None:
    before = footprint(registry, root)
    too_many = {f"t{i}": "v" for i in range(257)}
    with pytest.raises(InvalidInput, match="at most 256 tags, got 257"):
        registry.create_model("m", tags=too_many)
    with pytest.raises(InvalidInput, match="more than the limit of 256"):
        registry.create_model("m", tags={"k" * 257: "v"})
    with pytest.raises(InvalidInput, match="tag 'team': the value is 4097 characters"):
        registry.create_model("m", tags={"team": "v" * 4097})
    assert_nothing_written(registry, root, before)

    registry.create_model("m", tags={f"t{i}": "v" for i in range(255)})
    with pytest.raises(InvalidInput, match="at most 256 tags; 'm' would have 257"):
        registry.update_model("m", tags={"x": "1", "y": "2"})
    with pytest.raises(InvalidInput, match="tag 'team': the value is 4097 characters"):
        registry.update_model("m", tags={"team": "v" * 4097})
    with pytest.raises(InvalidInput, match="more than the limit of 256"):
        registry.update_model("m", tags={"k" * 257: "v"})
    assert len(registry.get_model("m").tags) == 255  # none of that was stored
    # removing one makes room for two, in the same call
    updated = registry.update_model("m", tags={"t0": None, "x": "1", "y": "2"})
    assert len(updated.tags) == 256 and "t0" not in updated.tags


def test_data_set_step_params_are_held_to_the_limits(registry: Registry, root: Path) -> None:
    before = footprint(registry, root)
    frame = pd.DataFrame({"x": [1, 2, 3]})
    with pytest.raises(InvalidInput, match="step 'scale': params nests deeper than the limit of 32"):
        registry.datasets.register("d", frame, steps=[{"name": "scale", "params": _nested(3000)}])
    assert list(registry.datasets.list()) == []
    assert footprint(registry, root) == before


# ---------------------------------------------------------------------- 3. symlinked folders


def test_a_symlinked_folder_inside_the_source_is_refused(
    registry: Registry, root: Path, folder: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.txt").write_text("not part of the model")
    (folder / "nested").mkdir()
    link = folder / "nested" / "linked"
    os.symlink(elsewhere, link, target_is_directory=True)
    before = footprint(registry, root)
    with pytest.raises(InvalidInput, match="symbolic links are not stored") as err:
        registry.register("m", folder)
    assert str(link) in str(err.value)
    assert_nothing_written(registry, root, before)


def test_a_symlinked_file_is_still_refused(
    registry: Registry, root: Path, folder: Path, tmp_path: Path
) -> None:
    target = tmp_path / "outside.bin"
    target.write_bytes(b"x")
    os.symlink(target, folder / "link.bin")
    before = footprint(registry, root)
    with pytest.raises(InvalidInput, match="symbolic links are not stored") as err:
        registry.register("m", folder)
    assert str(folder / "link.bin") in str(err.value)
    assert_nothing_written(registry, root, before)
