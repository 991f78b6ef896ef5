"""Interoperability with the OpenSSF ``model_signing`` tool, both ways, checked with the tool's
own library: a version folder verifies with the registry's model-signing key and the exported
``model.sig``, and a folder the tool signed registers with its signature checked and recorded."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import model_signing
import pandas as pd
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
from tests.export_support import check_golden, golden_json

from modelledger import IntegrityError, InvalidInput, Registry
from modelledger.cli import main

FILES = {
    "config.json": b'{"layers": 2}\n',
    "weights/model.bin": bytes(range(256)) * 8,
    "README.md": b"# demo\n",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Path]]:
    root = tmp_path_factory.mktemp("model-signing")
    registry = Registry.open(_url(root), artifacts=str(root / "artifacts"))
    registry.init()
    source = _folder(root / "unsigned", FILES)
    registry.register("bert", source, capture=False)
    yield registry, root
    registry.close()


def _url(root: Path) -> str:
    return f"sqlite:///{root / 'reg.db'}"


def _folder(path: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


def _ec_key(folder: Path, curve: ec.EllipticCurve | None = None) -> tuple[Path, Path, str]:
    """An EC key pair as the tool reads them (PEM files); returns (private, public, public PEM)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(curve or ec.SECP256R1())
    private = folder / "key.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public = folder / "key.pub"
    public.write_bytes(pem)
    return private, public, pem.decode()


def _sign_with_the_tool(folder: Path, private: Path) -> None:
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"])
    ).sign(folder, folder / "model.sig")


def _verify_with_the_tool(folder: Path, public: Path) -> None:
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public).verify(
        folder, folder / "model.sig"
    )


# ---------------------------------------------------------------------- export: the registry signs


def test_exported_signature_verifies_with_model_signing_and_a_changed_file_fails(
    setup: tuple[Registry, Path],
) -> None:
    registry, root = setup
    public = root / "registry-model-signing.pem"
    folder = root / "bert-1"
    registry.download("models:/bert/1", folder)
    where = ["--registry", _url(root), "--artifacts", str(root / "artifacts")]
    runner = CliRunner()
    result = runner.invoke(main, ["keys", "export", "--model-signing", "-o", str(public), *where])
    assert result.exit_code == 0, result.output
    assert public.read_bytes() == registry.model_signing_key()
    signature = str(folder / "model.sig")
    result = runner.invoke(
        main, ["export", "models:/bert/1", "--format", "model-signing", "-o", signature, *where]
    )
    assert result.exit_code == 0, result.output
    _verify_with_the_tool(folder, public)

    (folder / "weights" / "model.bin").write_bytes(b"\xff" + FILES["weights/model.bin"][1:])
    with pytest.raises(ValueError, match=r"weights/model\.bin"):
        _verify_with_the_tool(folder, public)


def test_exported_signature_is_deterministic_and_tied_to_the_registry_identity(
    setup: tuple[Registry, Path],
) -> None:
    registry, _ = setup
    first = registry.export("models:/bert/1", format="model-signing")
    assert registry.export("models:/bert/1", format="model-signing") == first

    bundle = json.loads(first)
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert (
        bundle["verificationMaterial"]["publicKey"]["hint"]
        == hashlib.sha256(registry.model_signing_key()).hexdigest()
    )
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    version = registry.get_version("models:/bert/1")
    assert {r["name"]: r["digest"] for r in statement["predicate"]["resources"]} == {
        f.path: f.sha256 for f in version.files
    }
    # the second signature: the identity's Ed25519 key over the same statement
    key_id = registry.whoami()["key_id"]
    public = serialization.load_pem_public_key(registry.public_key(key_id))
    key = SSlibKey.from_crypto(public, keyid=key_id)  # type: ignore[arg-type]
    assert list(Envelope.from_dict(dict(bundle["dsseEnvelope"])).verify([key], threshold=1)) == [key_id]


def test_a_registry_server_gives_its_model_signing_key_and_signature(setup: tuple[Registry, Path]) -> None:
    from tests.test_server import running

    from modelledger._remote import RemoteRegistry

    registry, _ = setup
    token = registry.create_token(registry.actor)[0]
    with running(registry) as url, RemoteRegistry(url, token=token) as remote:
        assert remote.model_signing_key() == registry.model_signing_key()
        assert remote.export("models:/bert/1", format="model-signing") == registry.export(
            "models:/bert/1", format="model-signing"
        )


def test_golden(setup: tuple[Registry, Path]) -> None:
    registry, _ = setup
    bundle = json.loads(registry.export("models:/bert/1", format="model-signing"))
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    bundle["dsseEnvelope"]["payload"] = "<payload>"
    check_golden(
        "model-signing.json", golden_json({"bundle": bundle, "statement": statement}, volatile=("hint",))
    )


def test_only_a_model_version_has_a_folder_to_sign(setup: tuple[Registry, Path]) -> None:
    registry, _ = setup
    dv = registry.datasets.register("tiny", pd.DataFrame({"a": [1, 2, 3]}), capture=False)
    with pytest.raises(InvalidInput, match="model version's folder"):
        registry.export(dv.uri, format="model-signing")


# ---------------------------------------------------------------------- registration: the tool signed


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()], ids=["P-256", "P-384"])
def test_a_folder_signed_by_the_tool_registers_with_its_signature_checked_and_recorded(
    setup: tuple[Registry, Path], curve: ec.EllipticCurve
) -> None:
    registry, root = setup
    folder = _folder(root / f"signed-{curve.name}", FILES)
    private, public, pem = _ec_key(root / f"signer-{curve.name}", curve)
    _sign_with_the_tool(folder, private)

    version = registry.register(
        "signed-bert", folder, manifest={"model_signing": {"public_key": pem}}, capture=False
    )
    record = version.manifest["model_signing"]
    assert record["key_fingerprint"] == hashlib.sha256(pem.encode()).hexdigest()
    assert record["signature"] == "model.sig" and record["files"] == len(FILES)
    assert "model.sig" in {f.path for f in version.files}

    where = ["--registry", _url(root), "--artifacts", str(root / "artifacts")]
    shown = CliRunner().invoke(main, ["versions", "show", version.uri, *where])
    assert shown.exit_code == 0, shown.output
    assert "Signed (model_signing)" in shown.output and record["key_fingerprint"] in shown.output

    # the version as downloaded still verifies with the tool: the signature was kept with it
    back = root / f"signed-back-{curve.name}"
    registry.download(version.uri, back)
    _verify_with_the_tool(back, public)


@pytest.mark.parametrize("damage", ["changed file", "extra file", "other key", "forged signature"])
def test_a_bad_signature_is_refused_and_nothing_is_registered(
    setup: tuple[Registry, Path], damage: str
) -> None:
    registry, root = setup
    base = root / f"bad-{damage.replace(' ', '-')}"
    folder = _folder(base / "model", FILES)
    private, _, pem = _ec_key(base / "signer")
    _sign_with_the_tool(folder, private)
    expected = "weights/model.bin"
    if damage == "changed file":
        (folder / "weights" / "model.bin").write_bytes(b"changed")
    elif damage == "extra file":
        (folder / "notes.txt").write_text("added after signing")
        expected = "not signed: notes.txt"
    elif damage == "other key":
        pem = _ec_key(base / "other")[2]
        expected = "fingerprint"
    else:
        bundle = json.loads((folder / "model.sig").read_text())
        payload = base64.b64decode(bundle["dsseEnvelope"]["payload"]).replace(b"config.json", b"config.jsoN")
        bundle["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
        (folder / "model.sig").write_text(json.dumps(bundle))
        expected = "does not verify"
    with pytest.raises(IntegrityError, match=expected):
        registry.register("bad-bert", folder, manifest={"model_signing": {"public_key": pem}}, capture=False)
    assert not _has_model(registry, "bad-bert")


def _has_model(registry: Registry, name: str) -> bool:
    return any(m.name == name for m in registry.iter_models())


def test_a_signature_without_a_key_or_a_key_without_a_signature_is_refused(
    setup: tuple[Registry, Path],
) -> None:
    registry, root = setup
    folder = _folder(root / "keyless", FILES)
    private, _, pem = _ec_key(root / "keyless-signer")
    _sign_with_the_tool(folder, private)
    with pytest.raises(InvalidInput, match=r"model_signing\.public_key"):
        registry.register("keyless", folder, capture=False)

    unsigned = _folder(root / "unsigned-2", FILES)
    with pytest.raises(InvalidInput, match=r"holds no model\.sig"):
        registry.register("keyless", unsigned, manifest={"model_signing": {"public_key": pem}}, capture=False)


@pytest.mark.parametrize("kind", ["certificate", "shards"])
def test_what_the_check_does_not_read_is_refused_by_name(setup: tuple[Registry, Path], kind: str) -> None:
    registry, root = setup
    folder = _folder(root / f"unread-{kind}", FILES)
    private, _, pem = _ec_key(root / f"unread-{kind}-signer")
    hashing = model_signing.hashing.Config()
    if kind == "shards":
        hashing = hashing.use_shard_serialization()
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private).set_hashing_config(
        hashing.set_ignored_paths(paths=["model.sig"])
    ).sign(folder, folder / "model.sig")
    if kind == "certificate":  # what a certificate-signed bundle carries instead of a key hint
        bundle = json.loads((folder / "model.sig").read_text())
        bundle["verificationMaterial"] = {"x509CertificateChain": {"certificates": []}, "tlogEntries": []}
        (folder / "model.sig").write_text(json.dumps(bundle))
    expected = "signed with a certificate" if kind == "certificate" else "hashes by 'shards'"
    with pytest.raises(InvalidInput, match=expected):
        registry.register("unread", folder, manifest={"model_signing": {"public_key": pem}}, capture=False)


def test_an_unsigned_folder_registers_as_before(setup: tuple[Registry, Path]) -> None:
    registry, root = setup
    folder = root / "plain"
    shutil.copytree(root / "unsigned", folder)
    version = registry.register("plain", folder, capture=False)
    assert "model_signing" not in version.manifest
