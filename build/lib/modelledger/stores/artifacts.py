"""The artifact store: one fsspec-backed class for every backend.

Files are write-once: a path that exists is never opened for writing again.
Data streams through hashing in fixed-size chunks, so memory stays bounded
whatever the file size. The local filesystem gets durability hooks (O_EXCL,
fsync of files and folders) that object stores do not need.

Every relative path (``rel``) a method takes is checked by ``_key`` before it is used: an
absolute path, a ``.`` or ``..`` segment, an empty segment, a backslash, NUL or another
control character is refused with :class:`~modelledger.errors.InvalidInput`, so no caller,
and no value read back from the metadata, can reach outside the store's root.

Every failure of the storage underneath (an ``OSError`` from the filesystem, a botocore
error from S3) leaves a public method as a :class:`~modelledger.errors.ModelLedgerError`
that says what to do (:meth:`ArtifactStore.error`): a read-only or full store and a missing
bucket are a :class:`StorageError`, refused access and missing credentials a
:class:`PermissionDenied`. ``file://`` roots are RFC 8089 URIs: ``%XX`` escapes are decoded.

With an :class:`~modelledger.ObjectLock` (``s3://`` roots only) every artefact, manifest,
data set file and capture file is written with S3 Object Lock retention (and a legal hold
if asked); folder-claim markers and ingest staging files are not, since nothing vouches for
them and they must stay removable. :meth:`ArtifactStore.remove` then deletes object
*versions* (a plain delete only adds a delete marker) and returns those S3 refused.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import posixpath
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, TypeVar, cast
from urllib.parse import unquote

from .._object_lock import ObjectLock, ObjectRetention
from .._time import now
from ..errors import AlreadyExists, InvalidInput, ModelLedgerError, NotFound, PermissionDenied, StorageError

__all__ = ["CHUNK", "ArtifactStore", "Progress", "local_root"]

CHUNK = 1024 * 1024
Progress = Callable[[int], None]
"""Called with the number of bytes just moved."""

# A backslash is a separator to Windows and to some object-store tools; NUL ends a C string
# (and makes os calls raise ValueError); other control characters have no place in a key.
_UNSAFE_CHARACTER = re.compile(r"[\x00-\x1f\x7f\\]")

F = TypeVar("F", bound=Callable[..., Any])

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_DENIED = {errno.EACCES, errno.EPERM}
_S3_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError"}
_NO_LOCK = {"ObjectLockConfigurationNotFoundError"}
# requests sent at once when reading the retention of many objects (HEAD each)
_HEADS_AT_ONCE = 64
# S3's smallest multipart part: an upload this large or larger may have gone in parts
_MULTIPART_FLOOR = 5 * 1024 * 1024


def local_root(url: str) -> str | None:
    """The local path a ``file://`` URL (percent-encoded, as :meth:`Path.as_uri` makes) names; else None.

    >>> local_root("file:///data/my%20store")
    '/data/my store'
    """
    if not url.startswith("file://"):
        return None
    rest = url[len("file://") :]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    return unquote(rest)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (s3fs keeps botocore's as the cause)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _s3_code(exc: BaseException) -> str | None:
    for cause in _causes(exc):
        response = getattr(cause, "response", None)
        if isinstance(response, dict):
            code = (response.get("Error") or {}).get("Code")
            if code:
                return str(code)
    return None


def _named(exc: BaseException, names: Iterable[str]) -> bool:
    wanted = set(names)
    return any(c.__name__ in wanted for cause in _causes(exc) for c in type(cause).__mro__)


def _is_store_failure(exc: BaseException) -> bool:
    """An error of the storage underneath (filesystem or S3 client), not of modelledger itself."""
    if isinstance(exc, OSError):
        return True
    module = type(exc).__module__.split(".", 1)[0]
    return module in {"botocore", "aiobotocore", "boto3", "s3fs"}


def _translated(action: str) -> Callable[[F], F]:
    """Make a public method raise :meth:`ArtifactStore.error` for any failure of the storage."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(self: ArtifactStore, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except ModelLedgerError:
                raise
            except Exception as exc:
                if not _is_store_failure(exc):
                    raise
                rel = next((a for a in args if isinstance(a, str)), "")
                raise self.error(exc, action, rel) from exc

        return cast(F, run)

    return wrap


class ArtifactStore:
    """Artefacts under one root URL (``file:///...``, ``s3://bucket/prefix``, ``memory://...``)."""

    def __init__(self, url: str, *, object_lock: ObjectLock | None = None, **storage_options: Any) -> None:
        self.url = url
        self._storage_options = storage_options
        self._fs: Any = None
        self._root: str | None = None
        self._local: bool | None = None
        self.object_lock = object_lock
        self._lock_checked = False
        if object_lock is not None and not self._is_s3_url:
            raise InvalidInput(
                f"object_lock needs an s3:// artefact root (S3 Object Lock), not {url}: "
                "use an S3 bucket with Object Lock enabled, or turn object_lock off"
            )

    # Constructing an fsspec filesystem may import heavy backends (s3fs, boto):
    # do it on first use, not in the constructor.
    @property
    def fs(self) -> Any:
        if self._fs is None:
            import fsspec  # imports its filesystem registry: only touching a store needs it

            # fsspec takes a file:// URL's path literally; a proper URI escapes ' ', '?', '#', '%'...
            target = local_root(self.url) or self.url
            fs, root = fsspec.core.url_to_fs(target, **self._storage_options)
            self._fs, self._root = fs, root.rstrip("/")
        return self._fs

    @property
    def root(self) -> str:
        self.fs  # noqa: B018 - resolves the root on first use
        assert self._root is not None
        return self._root

    @property
    def is_local(self) -> bool:
        if self._local is None:
            protocol = self.fs.protocol
            protocols = protocol if isinstance(protocol, (tuple, list)) else (protocol,)
            self._local = "file" in protocols or "local" in protocols
        return self._local

    def _key(self, rel: str, *, root_ok: bool = False) -> str:
        """The backend path of ``rel``, once it is proven to stay under the root.

        The one check every method that takes a relative path uses. ``root_ok`` lets ``""``
        mean the root itself, for reading and listing only: nothing writes or removes it.
        """
        problem = _key_problem(rel, root_ok=root_ok)
        if problem is not None:
            shown = rel[:200] if isinstance(rel, str) else rel
            raise InvalidInput(f"unsafe artefact path {shown!r}: {problem}")
        return posixpath.join(self.root, rel) if rel else self.root

    def full(self, rel: str) -> str:
        """The backend path of ``rel`` (``""`` is the root); an unsafe ``rel`` is refused."""
        return self._key(rel, root_ok=True)

    def uri(self, rel: str) -> str:
        """``rel`` as a URL: a proper (percent-encoded) ``file://`` URI on a local store."""
        if self.is_local:
            return Path(self.full(rel)).as_uri()
        return str(self.fs.unstrip_protocol(self.full(rel)))

    # ------------------------------------------------------------ failures

    def error(self, exc: BaseException, action: str, rel: str = "") -> ModelLedgerError:
        """``exc``, a failure of the storage while doing ``action`` (a verb) on ``rel``, as the
        library error that says what to do (one line)."""
        if isinstance(exc, ModelLedgerError):
            return exc
        where = self._where(rel)
        code = _s3_code(exc)
        number = getattr(exc, "errno", None)
        if _named(exc, _NO_CREDENTIALS):
            return PermissionDenied(
                f"cannot {action} {where}: no S3 credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or give key and secret in the storage options"
            )
        if code == "NoSuchBucket" or (self._is_s3_url and "bucket does not exist" in str(exc)):
            return self._no_bucket()
        if code in _NO_LOCK or "missing ObjectLockConfiguration" in str(exc):
            return self._no_lock()
        if code in _S3_DENIED or isinstance(exc, PermissionError) or number in _DENIED:
            return PermissionDenied(
                f"cannot {action} {where}: permission denied; give this user access to "
                f"{self._where('')} or use another artefact root"
            )
        if number == errno.EROFS:
            return StorageError(
                f"cannot {action} {where}: the artefact store is read-only; "
                "make it writable or use another artefact root"
            )
        if number in _FULL:
            return StorageError(
                f"cannot {action} {where}: no space left on the artefact store; free some space and try again"
            )
        detail = " ".join(str(getattr(exc, "strerror", None) or exc or type(exc).__name__).split())
        return StorageError(f"cannot {action} {where}: {detail}")

    @property
    def _is_s3_url(self) -> bool:
        return self.url.lower().startswith(("s3://", "s3a://"))

    @property
    def is_s3(self) -> bool:
        """Whether the root is an ``s3://`` URL (the only kind with Object Lock)."""
        return self._is_s3_url

    def _where(self, rel: str) -> str:
        """``rel`` as people read it: a local path, or the store's URL."""
        try:
            return self.full(rel) if self.is_local else self.uri(rel)
        except Exception:  # the filesystem itself could not be made: name the configured URL
            return f"{self.url.rstrip('/')}/{rel}" if rel else self.url

    def _bucket(self) -> str:
        return self.url.split("://", 1)[1].split("/", 1)[0]

    def _no_bucket(self) -> StorageError:
        bucket = self._bucket()
        return StorageError(
            f"the S3 bucket {bucket!r} does not exist: create it with `modelledger init --create-bucket` "
            f"(or `aws s3 mb s3://{bucket}`), or fix the artefact root {self.url}"
        )

    def _no_lock(self) -> StorageError:
        bucket = self._bucket()
        return StorageError(
            f"the S3 bucket {bucket!r} does not have Object Lock enabled, so it cannot keep "
            f"objects with object_lock {self.object_lock}: use a bucket created with Object Lock "
            "(`modelledger init --create-bucket` with object_lock set, or `aws s3api create-bucket "
            "--object-lock-enabled-for-bucket`), enable it on this one (`aws s3api "
            "put-object-lock-configuration`), or turn object_lock off"
        )

    @_translated("create the bucket of")
    def create_bucket(self) -> bool:
        """Create the S3 bucket the artefact root lives in (with Object Lock enabled when the
        store has an ``object_lock``); False when it exists already."""
        if not self._is_s3_url:
            raise InvalidInput(f"only an s3:// artefact root has a bucket to create, not {self.url}")
        bucket = self._bucket()
        if self.fs.exists(bucket):
            return False
        if self.object_lock is None:
            self.fs.mkdir(bucket)
        else:
            # s3fs's mkdir passes no extra create_bucket parameters: ask S3 directly
            params: dict[str, Any] = {"Bucket": bucket, "ObjectLockEnabledForBucket": True}
            region = (getattr(self.fs, "client_kwargs", None) or {}).get("region_name")
            if region and region != "us-east-1":  # S3 refuses us-east-1 as a location constraint
                params["CreateBucketConfiguration"] = {"LocationConstraint": region}
            self.fs.call_s3("create_bucket", **params)
        self.fs.invalidate_cache()
        return True

    # ------------------------------------------------------------ object lock

    def _lock(self) -> dict[str, Any]:
        """The Object Lock parameters of an object written now; {} without ``object_lock``.

        The first call checks that the bucket has Object Lock enabled, so that a bucket without
        it is a clear error before anything is written, not S3's InvalidRequest mid-upload.
        """
        if self.object_lock is None:
            return {}
        if not self._lock_checked:
            try:
                answer = self.fs.call_s3("get_object_lock_configuration", Bucket=self._bucket())
            except Exception as exc:
                if _s3_code(exc) not in _NO_LOCK:
                    raise
                answer = {}
            config = answer.get("ObjectLockConfiguration") or {}
            if config.get("ObjectLockEnabled") != "Enabled":
                raise self._no_lock()
            self._lock_checked = True
        return self.object_lock.headers(now())

    def _retain(self, path: str) -> None:
        """Give an object that was written without them (a copy) the retention and legal hold."""
        lock = self._lock()
        if not lock:
            return
        bucket, key, _ = self.fs.split_path(path)
        # Set after the copy rather than sent with it: S3 takes them on CopyObject, but the
        # S3 servers used for testing (moto) ask a copy for a body checksum it cannot have.
        self.fs.call_s3(
            "put_object_retention",
            Bucket=bucket,
            Key=key,
            Retention={"Mode": lock["ObjectLockMode"], "RetainUntilDate": lock["ObjectLockRetainUntilDate"]},
        )
        if "ObjectLockLegalHoldStatus" in lock:
            self.fs.call_s3("put_object_legal_hold", Bucket=bucket, Key=key, LegalHold={"Status": "ON"})

    def _retain_again(self, rel: str) -> None:
        """Set the retention of an object that may have been uploaded in parts, once more.

        S3 takes the Object Lock parameters on CreateMultipartUpload, and s3fs sends them, but
        not every S3-compatible server keeps them (moto drops them); setting them after the
        upload costs one or two requests per large file and only ever extends the retention.
        """
        if self.object_lock is not None:
            self._retain(self._key(rel))

    def _rel_of(self, bucket: str, key: str) -> str:
        return posixpath.relpath(f"{bucket}/{key}", self.root)

    @_translated("read the retention of")
    def retention(self, rels: Iterable[str]) -> list[ObjectRetention]:
        """What S3 Object Lock holds on the current version of each object ``rels`` names (one
        HEAD request each, a few dozen at a time); objects that are gone are left out. Empty
        on a store that is not S3."""
        if not self._is_s3_url:
            return []
        from concurrent.futures import ThreadPoolExecutor  # only a retention report needs threads

        fs = self.fs
        wanted = [(rel, fs.split_path(self._key(rel))) for rel in rels]

        def head(item: tuple[str, tuple[str, str, str | None]]) -> ObjectRetention | None:
            rel, (bucket, key, _version) = item
            try:
                return _retention_of(rel, fs.call_s3("head_object", Bucket=bucket, Key=key))
            except FileNotFoundError:  # removed meanwhile: nothing to report
                return None

        # one HEAD per object is one round trip each: a few dozen in flight at once
        with ThreadPoolExecutor(max_workers=min(_HEADS_AT_ONCE, max(len(wanted), 1))) as pool:
            out = [r for r in pool.map(head, wanted) if r is not None]
        return out

    @_translated("read the retention of")
    def retained(self, rel: str) -> list[ObjectRetention]:
        """The objects at or below ``rel`` that S3 would refuse to delete now (retention not
        yet over, or a legal hold). Empty without ``object_lock``: nothing is asked of S3."""
        if self.object_lock is None:
            return []
        path = self.full(rel)
        self._forget(rel)
        try:
            found = self.fs.find(path)
        except FileNotFoundError:
            return []
        at = now()
        rels = [self._rel_of(*self.fs.split_path(p)[:2]) for p in found]
        return [r for r in self.retention(rels) if r.active(at)]

    def _remove_versions(self, rel: str) -> tuple[ObjectRetention, ...]:
        """Delete every version of every object at or below ``rel``; returns those S3 refused
        (Object Lock), which stay hidden behind a delete marker.

        In a bucket with Object Lock (so with versioning) a plain delete only adds a delete
        marker and the bytes stay; retention protects the versions. So: hide the objects
        first (the delete markers), then delete the versions one by one, then the delete
        markers of every object no version is left of.
        """
        path = self._key(rel)
        bucket, key, _ = self.fs.split_path(path)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)

        def listing() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
            versions: list[tuple[str, str]] = []
            markers: list[tuple[str, str]] = []
            params: dict[str, Any] = {"Bucket": bucket, "Prefix": key}
            while True:
                page = self.fs.call_s3("list_object_versions", **params)
                for into, entries in ((versions, page.get("Versions")), (markers, page.get("DeleteMarkers"))):
                    for entry in entries or ():
                        name = str(entry["Key"])
                        # the prefix "models/m/1" also matches "models/m/10/..."
                        if name == key or name.startswith(key + "/"):
                            into.append((name, str(entry["VersionId"])))
                if not page.get("IsTruncated"):
                    return versions, markers
                params["KeyMarker"] = page["NextKeyMarker"]
                params["VersionIdMarker"] = page["NextVersionIdMarker"]

        def delete(entries: list[tuple[str, str]]) -> None:
            for start in range(0, len(entries), 1000):  # DeleteObjects takes at most 1,000
                objects = [{"Key": k, "VersionId": v} for k, v in entries[start : start + 1000]]
                # refusals come back per object in the answer's Errors: the listing that
                # follows is what says what is left
                self.fs.call_s3("delete_objects", Bucket=bucket, Delete={"Objects": objects, "Quiet": True})

        versions, _markers = listing()
        delete(versions)
        left, markers = listing()
        kept_keys = {k for k, _v in left}
        delete([(k, v) for k, v in markers if k not in kept_keys])
        kept = []
        for k, v in left:
            head = self.fs.call_s3("head_object", Bucket=bucket, Key=k, VersionId=v)
            kept.append(_retention_of(self._rel_of(bucket, k), head))
        return tuple(kept)

    def _missing(self, rel: str, exc: BaseException) -> ModelLedgerError:
        """A file that is not there, or (on S3) a bucket that is not."""
        if self._is_s3_url and (_s3_code(exc) == "NoSuchBucket" or not self._bucket_exists()):
            return self._no_bucket()
        return NotFound("artefact file", rel)

    def _bucket_exists(self) -> bool:
        try:
            return bool(self.fs.exists(self._bucket()))
        except Exception:  # cannot tell: report the file as missing, as it is
            return True

    # ------------------------------------------------------------ folders

    @_translated("create a folder in")
    def claim_folder(self, parent: str, key: str, *, after: int = 0) -> str:
        """Create and return a new folder ``parent/key`` (or ``key.2``, ``key.3``...).

        A folder that exists is never reused: two writers racing for the same key
        each end up with their own folder. ``key`` is one path segment. ``after`` is the
        number (``key`` itself is 1) after which to start looking, for a caller that knows
        which ones are taken (the registry asks its metadata); without it the claim starts at
        ``key`` and steps over each folder that exists.
        """
        if not isinstance(key, str) or "/" in key:
            raise InvalidInput(f"unsafe artefact folder name {key!r}: it must be one path segment")
        self._key(f"{parent}/{key}")
        # No listing of ``parent``: it grows with every version (on S3 a LIST call per page of
        # 1,000); each try is one exclusive create, and only a collision costs another.
        n = max(after, 0) + 1
        while True:
            rel = f"{parent}/{key}" if n == 1 else f"{parent}/{key}.{n}"
            if self._make_dir_exclusive(rel):
                return rel
            n += 1

    def _make_dir_exclusive(self, rel: str) -> bool:
        path = self._key(rel)
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                os.mkdir(path)
            except FileExistsError:
                return False
            return True
        # Object stores have no directories; a marker object, created only if absent, claims
        # the prefix. A prefix that already holds files without a marker is taken too.
        self._forget(rel)
        if self.fs.exists(path):
            return False
        try:
            fh = self._open_exclusive(f"{path}/.claimed")
            # not empty: s3fs stores an empty file with a plain (unconditional) touch
            fh.write(b"claimed\n")
            fh.close()
        except FileExistsError:
            return False
        return True

    def _forget(self, rel: str) -> None:
        """Drop fsspec's cached listings of ``rel`` and its parents.

        Object-store filesystems answer ``exists``/``ls`` from listings cached in this
        process; another process may have written since. Every check that decides whether
        something is new, and every listing that verify reports from, looks again.
        """
        if not self.is_local:
            self.fs.invalidate_cache(self.full(rel))

    @_translated("list")
    def refresh(self) -> None:
        """Forget every cached listing (before a full check such as verify)."""
        if not self.is_local:
            self.fs.invalidate_cache()

    def _open_exclusive(self, path: str, **extra: Any) -> IO[bytes]:
        """Open ``path`` for writing such that the write fails if the object exists by then.

        With "x" modes (s3fs sends If-None-Match: *, memory checks on open) the store itself
        refuses to replace an object another writer created after our own check; a
        filesystem without them gets the check alone. ``extra`` are parameters of the upload
        (the Object Lock ones).
        """
        try:
            return self.fs.open(path, "xb", **extra)  # type: ignore[no-any-return]
        except (ValueError, NotImplementedError):
            if self.fs.exists(path):
                raise FileExistsError(path) from None
            return self.fs.open(path, "wb", **extra)  # type: ignore[no-any-return]

    @_translated("remove")
    def remove_tree(self, rel: str) -> None:
        """Remove a file or folder (cleaning up after a failed write). With ``object_lock``,
        versions too; those Object Lock keeps stay hidden behind a delete marker."""
        if self.object_lock is not None:
            self._remove_versions(rel)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._key(rel), recursive=True)

    @_translated("reach")
    def ping(self) -> None:
        """One cheap read of the root (a listing), raising the library error when the store
        cannot be reached. A local root that does not exist yet is fine (the first write makes
        it); a missing S3 bucket is not."""
        try:
            self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            if self._is_s3_url and not self.fs.exists(self._bucket()):
                raise self._no_bucket() from None

    @_translated("read")
    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.full(rel)))

    @_translated("list")
    def list_files(self, rel: str) -> list[str]:
        """Every file below ``rel``, as paths relative to ``rel``."""
        base = self.full(rel)
        if self.is_local:
            return _walk_local(base)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        out = []
        for p in found:
            sub = posixpath.relpath(p, base)
            if sub != ".claimed":
                out.append(sub)
        return sorted(out)

    @_translated("list")
    def list_names(self, rel: str) -> list[str]:
        """The names of the entries (files and folders) directly in folder ``rel``, sorted; [] if none.

        Always a fresh listing: an object store's listing cached by fsspec is dropped first,
        so what another process wrote since is seen. The folder-claim marker is left out, as
        in :meth:`list_files`.
        """
        full = self.full(rel)
        if self.is_local:
            try:
                names = os.listdir(full)
            except (FileNotFoundError, NotADirectoryError):
                return []
        else:
            self.fs.invalidate_cache(full)
            try:
                names = [posixpath.basename(p.rstrip("/")) for p in self.fs.ls(full, detail=False)]
            except FileNotFoundError:
                return []
        return sorted(name for name in names if name != ".claimed")

    @_translated("list")
    def list_dirs(self, rel: str) -> list[str]:
        if self.is_local:
            try:
                with os.scandir(self.full(rel)) as entries:
                    return sorted(e.name for e in entries if e.is_dir())
            except (FileNotFoundError, NotADirectoryError):
                return []
        try:
            entries = self.fs.ls(self.full(rel), detail=True)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries if e["type"] == "directory")

    @_translated("list")
    def usage(self, rel: str) -> tuple[int, datetime | None]:
        """Total size of the files at or below ``rel`` and the newest modification time among them."""
        path = self.full(rel)
        try:
            found = self.fs.find(path, detail=True) if self.fs.isdir(path) else {path: self.fs.info(path)}
        except FileNotFoundError:
            return 0, None
        size, newest = 0, None
        for info in found.values():
            size += int(info.get("size") or 0)
            when = _modified(info)
            if when is not None and (newest is None or when > newest):
                newest = when
        if not found:
            # an empty folder (a claim cut short by a crash) has its own time on local stores
            with contextlib.suppress(FileNotFoundError):
                newest = _modified(self.fs.info(path))
        return size, newest

    @_translated("remove")
    def remove(self, rel: str) -> tuple[ObjectRetention, ...]:
        """Remove a file or folder, then any folders it leaves empty (local stores) up to the root.

        With ``object_lock``, every version of its objects is deleted (a plain delete would
        only add a delete marker); returned are the versions S3 Object Lock refused to
        delete, which are hidden but keep their bytes until their retention ends.
        """
        if self.object_lock is not None:
            kept = self._remove_versions(rel)
            self._forget(rel)
            return kept
        self.remove_tree(rel)
        if self.is_local:
            parent = os.path.dirname(self._key(rel))
            while parent.startswith(self.root + "/"):
                try:
                    os.rmdir(parent)
                except OSError:
                    break
                parent = os.path.dirname(parent)
        self._forget(rel)
        return ()

    # ------------------------------------------------------------ write-once files

    def _open_new(self, rel: str, *, retain: bool = True) -> IO[bytes]:
        path = self._key(rel)
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            except FileExistsError as exc:
                raise AlreadyExists("artefact file", rel) from exc
            return os.fdopen(fd, "wb")
        self._forget(rel)
        if self.fs.exists(path):
            raise AlreadyExists("artefact file", rel)
        try:
            return self._open_exclusive(path, **(self._lock() if retain else {}))
        except FileExistsError as exc:
            raise AlreadyExists("artefact file", rel) from exc

    @_translated("write")
    def open_new(self, rel: str, *, retain: bool = True) -> IO[bytes]:
        """A new write-once file; end it with :meth:`finish` (or :meth:`sync`, then close).

        On an object store the object appears when the file is closed, and only if no one
        else created it meanwhile: closing raises ``FileExistsError`` otherwise, which
        :meth:`finish` reports as :class:`AlreadyExists`. ``retain=False`` writes it without
        Object Lock retention: for a staging file that :meth:`move` gives its final name
        (and the retention).
        """
        return self._open_new(rel, retain=retain)

    @_translated("write")
    def sync(self, fh: IO[bytes]) -> None:
        """Flush a file opened with :meth:`open_new` to stable storage (local files only)."""
        if self.is_local:
            fh.flush()
            os.fsync(fh.fileno())

    @_translated("move a file to")
    def move(self, src: str, dst: str) -> None:
        """Move a finished file to its final, never-before-used path."""
        source, target = self._key(src), self._key(dst)
        if self.is_local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if os.path.exists(target):
                raise AlreadyExists("artefact file", dst)
            os.rename(source, target)
            _fsync_dir(os.path.dirname(target))
            return
        self._forget(dst)
        if self.fs.exists(target):
            raise AlreadyExists("artefact file", dst)
        if self.object_lock is None:
            self.fs.mv(source, target)
            return
        self.fs.copy(source, target)
        self._retain(target)
        # the source's version too, not just a delete marker over it
        self._remove_versions(src)

    @_translated("write")
    def finish(self, fh: IO[bytes], rel: str) -> None:
        """Make a file from :meth:`open_new` durable and close it."""
        try:
            if self.is_local:
                fh.flush()
                os.fsync(fh.fileno())
            fh.close()
        except FileExistsError as exc:
            raise AlreadyExists("artefact file", rel) from exc

    @_translated("write")
    def put_bytes(self, rel: str, data: bytes) -> str:
        """Write a new file; returns its sha256 hex."""
        fh = self._open_new(rel)
        try:
            fh.write(data)
        finally:
            self.finish(fh, rel)
        return hashlib.sha256(data).hexdigest()

    @_translated("write")
    def put_stream(
        self, rel: str, chunks: Iterator[bytes], progress: Progress | None = None
    ) -> tuple[int, str]:
        """Write a new file from chunks, hashing on the way; returns (size, sha256 hex)."""
        digest = hashlib.sha256()
        size = 0
        fh = self._open_new(rel)
        try:
            for chunk in _source(chunks, rel):
                digest.update(chunk)
                fh.write(chunk)
                size += len(chunk)
                if progress:
                    progress(len(chunk))
        finally:
            self.finish(fh, rel)
        if size >= _MULTIPART_FLOOR:
            self._retain_again(rel)
        return size, digest.hexdigest()

    @_translated("write")
    def put_atomic(self, rel: str, data: bytes | bytearray | memoryview) -> bool:
        """Publish ``data`` at ``rel`` whole or not at all; False, writing nothing, if ``rel`` exists.

        For files a writer may publish again after a failure (the same name, the same
        content): an existing file is kept. On a local store the data goes to a temporary
        ``.tmp-<hex>`` file in the same folder, is fsynced, renamed into place, and the folder
        is fsynced, so a crash leaves the whole file or an ignorable ``.tmp-*`` file, never
        a partial one. On an object store the object appears whole when its upload completes.
        ``data`` is anything with the buffer protocol (bytes, memoryview, a pyarrow Buffer).
        """
        path = self._key(rel)
        if self.is_local:
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            if os.path.exists(path):
                return False
            tmp = os.path.join(folder, f".tmp-{secrets.token_hex(16)}")
            try:
                with open(tmp, "wb") as fh:
                    fh.write(memoryview(data))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            _fsync_dir(folder)
            return True
        self._forget(rel)
        if self.fs.exists(path):
            return False
        self.fs.pipe_file(path, bytes(memoryview(data)), **self._lock())
        if memoryview(data).nbytes >= _MULTIPART_FLOOR:
            self._retain_again(rel)
        return True

    @_translated("write")
    def sync_folder(self, rel: str) -> None:
        """Make the folder's entries durable (a no-op on object stores)."""
        top = self._key(rel)
        if not self.is_local:
            return
        for dirpath, _dirs, _files in os.walk(top):
            _fsync_dir(dirpath)
        _fsync_dir(os.path.dirname(top))

    # ------------------------------------------------------------ reads

    @_translated("read")
    def open(self, rel: str) -> IO[bytes]:
        try:
            if self.is_local:
                # the same file fsspec would open, without its per-call path handling: verify
                # opens every stored file, so that overhead showed in its profile
                return open(self._key(rel), "rb")
            return self.fs.open(self._key(rel), "rb")  # type: ignore[no-any-return]
        except FileNotFoundError as exc:
            raise self._missing(rel, exc) from exc

    @_translated("read")
    def open_input(self, rel: str) -> Any:
        """``rel`` opened for random-access reading, such as a Parquet reader needs.

        On a local store it is a pyarrow memory map (reads copy nothing); elsewhere the
        backend's seekable file. Close it, or use it as a context manager. A missing file
        raises :class:`NotFound`.
        """
        path = self._key(rel)
        try:
            if self.is_local:
                import pyarrow as pa  # heavy: loaded on first use so `import modelledger` stays fast

                return pa.memory_map(path, "r")
            return self.fs.open(path, "rb")
        except FileNotFoundError as exc:
            raise self._missing(rel, exc) from exc

    @_translated("read")
    def read_bytes(self, rel: str) -> bytes:
        with self.open(rel) as fh:
            return fh.read()

    @_translated("read")
    def hash_file(self, rel: str) -> tuple[int, str]:
        """(size, sha256 hex) of a stored file, streamed."""
        digest = hashlib.sha256()
        size = 0
        with self.open(rel) as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()

    def reopen_spec(self) -> tuple[str, dict[str, Any]] | None:
        """``(url, storage options)`` that open this same store in another process (a
        verify's worker processes); None for ``memory://``, which lives in this process only."""
        if self.url.startswith("memory://"):
            return None
        return self.url, dict(self._storage_options)


def _retention_of(rel: str, head: Mapping[str, Any]) -> ObjectRetention:
    """The retention a HEAD answer (boto3's names) shows."""
    mode = head.get("ObjectLockMode")
    until = head.get("ObjectLockRetainUntilDate")
    if isinstance(until, str):
        until = datetime.fromisoformat(until.replace("Z", "+00:00"))
    return ObjectRetention(
        path=rel,
        mode=str(mode).lower() if mode else None,
        retain_until=until.astimezone(timezone.utc) if isinstance(until, datetime) else None,
        legal_hold=head.get("ObjectLockLegalHoldStatus") == "ON",
        version_id=head.get("VersionId"),
    )


def _key_problem(rel: object, *, root_ok: bool) -> str | None:
    """Why ``rel`` is not a safe path relative to a store's root, or ``None``."""
    if not isinstance(rel, str):
        return f"must be a string, got {type(rel).__name__}"
    if not rel:
        return None if root_ok else "is empty"
    if rel.startswith("/"):
        return "is absolute; it must be relative to the artefact root"
    if _UNSAFE_CHARACTER.search(rel):
        return "holds a backslash, NUL or another control character"
    segments = rel.split("/")
    if "" in segments:
        return "has an empty segment ('//' or a trailing '/')"
    if "." in segments or ".." in segments:
        return "has a '.' or '..' segment"
    return None


def _source(chunks: Iterator[bytes], rel: str) -> Iterator[bytes]:
    """``chunks``, with a failure to read them (the source, not this store) as :class:`InvalidInput`."""
    it = iter(chunks)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            return
        except OSError as exc:
            raise InvalidInput(f"cannot read the source of {rel}: {exc}") from exc
        yield chunk


def _modified(info: dict[str, Any]) -> datetime | None:
    """A listing entry's modification time, whatever the filesystem calls it."""
    for key in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, tz=timezone.utc)
    return None


def _walk_local(base: str) -> list[str]:
    """What ``fs.find(base)`` lists on a local filesystem (files below ``base``, relative to it,
    the folder-claim marker left out), sorted, from ``os.walk`` rather than fsspec's listing
    of every entry. A symbolic link to a folder is listed as an entry, not followed: whatever
    it is, it is not a file of the folder, and a listing that skipped it would hide it."""
    if os.path.isfile(base):
        return ["."]
    if not os.path.isdir(base):
        return []

    def unreadable(exc: OSError) -> None:
        # a folder that cannot be read must not vanish from the listing (verify would miss
        # what it holds); one removed while walking (a gc, a failed write) is simply gone
        if not isinstance(exc, FileNotFoundError):
            raise exc

    out: list[str] = []

    # os.walk's rules (a folder is what is_dir() says, following links; a link to a folder is
    # not descended), with the relative names built as it goes: os.walk and relpath per
    # folder cost more than the rest of a verify's scan of a small version folder
    def walk(path: str, prefix: str) -> None:
        try:
            entries = list(os.scandir(path))
        except OSError as exc:
            unreadable(exc)
            return
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if not is_dir or entry.is_symlink():
                out.append(prefix + entry.name)
            else:
                walk(entry.path, prefix + entry.name + "/")

    walk(base, "")
    return sorted(p for p in out if p != ".claimed")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_file(path: Path, chunk: int = CHUNK) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while data := fh.read(chunk):
            yield data
