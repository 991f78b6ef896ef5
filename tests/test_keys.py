"""The registry's Ed25519 key: file permissions, no overwrite, sign/verify, key ids."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelledger._keys import (
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    public_key_pem,
    sign,
    verify_signature,
)
from modelledger.errors import AlreadyExists, InvalidInput, KeyFileExposed, NotFound, PermissionDenied

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 0: a file created without an explicit mode would be world-readable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_only
def test_generate_key_writes_an_owner_only_pkcs8_file(tmp_path: Path, permissive_umask: None) -> None:
    path = tmp_path / "registry.key"
    public_pem = generate_key(path)
    assert _mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, unencrypted
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert public_key_pem(load_private_key(path)) == public_pem


def test_generate_key_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "registry.key"
    generate_key(path)
    before = path.read_bytes()
    with pytest.raises(AlreadyExists, match=r"registry\.key"):
        generate_key(path)
    assert path.read_bytes() == before


@posix_only
def test_generate_key_does_not_follow_a_planted_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.key"
    link = tmp_path / "registry.key"
    link.symlink_to(target)
    with pytest.raises(AlreadyExists):
        generate_key(link)
    assert not target.exists()


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606, 0o620, 0o602, 0o610])
def test_load_refuses_a_key_group_or_others_may_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "registry.key"
    generate_key(path)
    path.chmod(mode)
    with pytest.raises(PermissionDenied, match=str(path)) as info:
        load_private_key(path)
    assert isinstance(info.value, KeyFileExposed)
    assert info.value.path == str(path)
    assert info.value.mode == mode
    assert "chmod 600" in str(info.value)


@posix_only
@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_load_accepts_owner_only_keys(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "registry.key"
    public_pem = generate_key(path)
    path.chmod(mode)
    assert public_key_pem(load_private_key(path)) == public_pem


def test_load_missing_key_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="key file"):
        load_private_key(tmp_path / "nope.key")


def test_load_refuses_something_that_is_not_an_ed25519_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"not a key")
    garbage.chmod(0o600)
    with pytest.raises(InvalidInput):
        load_private_key(garbage)

    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ec_key.chmod(0o600)
    with pytest.raises(InvalidInput, match="not an Ed25519"):
        load_private_key(ec_key)


def test_sign_verify_roundtrip_and_failures(tmp_path: Path) -> None:
    public_pem = generate_key(tmp_path / "a.key")
    other_pem = generate_key(tmp_path / "b.key")
    key = load_private_key(tmp_path / "a.key")

    signature = sign(key, b"checkpoint 1000")
    assert len(signature) == 64
    assert verify_signature(public_pem, b"checkpoint 1000", signature)
    assert not verify_signature(public_pem, b"checkpoint 1001", signature)  # altered data
    assert not verify_signature(other_pem, b"checkpoint 1000", signature)  # wrong key
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify_signature(public_pem, b"checkpoint 1000", flipped)
    assert not verify_signature(public_pem, b"checkpoint 1000", signature[:63])
    assert not verify_signature(public_pem, b"checkpoint 1000", b"")


def test_malformed_public_key_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        verify_signature(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n", b"x", bytes(64))


def test_key_id_is_a_short_sha256_of_the_raw_public_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    public_pem = generate_key(tmp_path / "a.key")
    key = load_private_key(tmp_path / "a.key")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    expected = hashlib.sha256(raw).hexdigest()[:16]
    assert key_id(key) == key_id(key.public_key()) == key_id(public_pem) == expected
    assert key_id(load_public_key(public_pem)) == expected
    assert key_id(generate_key(tmp_path / "b.key")) != expected


def test_importing_the_ledger_modules_does_not_import_cryptography() -> None:
    code = (
        "import sys, modelledger\n"
        "before = 'cryptography' in sys.modules\n"
        "import modelledger._keys, modelledger._ledger, modelledger._canonical\n"
        "print(before, 'cryptography' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = out.stdout.split()
    assert after == before


def test_generate_key_in_a_missing_folder_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="folder"):
        generate_key(tmp_path / "missing" / "registry.key")


def test_racing_creators_get_one_key_and_the_losers_can_load_it_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    path = tmp_path / "registry.key"
    real_write = os.write

    def slow_write(fd: int, data: bytes) -> int:  # a slow disk: the key's bytes take a while
        time.sleep(0.05)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", slow_write)
    barrier = threading.Barrier(8)
    won: list[bytes] = []
    loaded: list[bytes] = []
    errors: list[BaseException] = []

    def create() -> None:
        barrier.wait()
        try:
            won.append(generate_key(path))
        except AlreadyExists:
            try:  # the file is never seen half-written
                loaded.append(public_key_pem(load_private_key(path)))
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.undo()
    assert errors == []
    assert len(won) == 1 and len(loaded) == 7
    assert set(loaded) == set(won)
    assert [p.name for p in tmp_path.iterdir()] == ["registry.key"]  # no temporary file left
