"""The artifact store: files and folders in S3-compatible storage, verified by sha256.

A folder artifact is its files plus ``manifest.json`` (every file's path, sha256 and size), written
last: an attempt without a manifest is incomplete and is never read. Every read checks the bytes
against the reference it was given and raises ``ArtifactIntegrityError`` on any mismatch.
A store that cannot be reached (refused connection, timeout, HTTP 5xx, after the client's own short
retries) raises ``StoreUnavailableError``, a retryable error that names the endpoint and operation.
Uses the ``minio`` SDK (SeaweedFS locally, MinIO deployed).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3.exceptions
from minio import Minio
from minio.error import S3Error, ServerError

from selfimprove.core.keys import MANIFEST, split_uri
from selfimprove.core.settings import StoreSettings

# the store's errors, named here too: callers catch them from the store they use
from selfimprove.core.storeerrors import ArtifactError as ArtifactError
from selfimprove.core.storeerrors import ArtifactIntegrityError as ArtifactIntegrityError
from selfimprove.core.storeerrors import ArtifactNotFoundError as ArtifactNotFoundError
from selfimprove.core.storeerrors import StoreUnavailableError as StoreUnavailableError
from selfimprove.v2.common_pb2 import ArtifactRef

MANIFEST_TYPE = "application/vnd.selfimprove.manifest+json"
# S3 error codes that mean "the server cannot answer now", whatever the HTTP status says.
TRANSIENT_S3_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})
_CONNECTION_ERRORS = (
    urllib3.exceptions.MaxRetryError,  # refused or reset connections, 5xx, after urllib3's retries
    urllib3.exceptions.ProtocolError,  # the connection broke during a request or a body read
    urllib3.exceptions.NewConnectionError,
    urllib3.exceptions.TimeoutError,
    ConnectionError,
)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc``, raised by the ``minio`` client, means the store is down or overloaded (a
    transient outage to wait out) rather than a missing object, a refused credential or bad input.

    >>> unavailable(urllib3.exceptions.ProtocolError("Connection aborted."))
    True
    >>> unavailable(ServerError("bad gateway", 502)), unavailable(ServerError("odd", 400))
    (True, False)
    >>> unavailable(S3Error(None, "SlowDown", "", "", "", "")), unavailable(S3Error(None, "NoSuchKey", "", "", "", ""))
    (True, False)
    >>> unavailable(ValueError("bad key"))
    False
    """
    if isinstance(exc, _CONNECTION_ERRORS):
        return True
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, S3Error):
        status = getattr(exc.response, "status", 0) or 0
        return exc.code in TRANSIENT_S3_CODES or status >= 500
    return False


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_known: dict[tuple[str, int, int], str] = {}


def sha256_file_cached(path: Path) -> str:
    """``sha256_file`` remembered per (path, mtime, size): large model files are hashed once per process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _known:
        _known[key] = sha256_file(path)
    return _known[key]


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    sha256: str
    bytes: int
    media_type: str = "application/octet-stream"


@dataclass
class Manifest:
    prefix: str
    files: list[ManifestEntry]
    meta: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)

    def to_json(self) -> bytes:
        body = {
            "version": 1,
            "prefix": self.prefix,
            "created": self.created,
            "meta": self.meta,
            "files": [e.__dict__ for e in self.files],
        }
        return json.dumps(body, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        try:
            body = json.loads(data)
            files = [ManifestEntry(**e) for e in body["files"]]
            return cls(prefix=body["prefix"], files=files, meta=body.get("meta", {}), created=body["created"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactIntegrityError(f"{where}: malformed manifest ({exc})") from None

    def entry(self, name: str) -> ManifestEntry:
        for e in self.files:
            if e.path == name:
                return e
        raise ArtifactNotFoundError(f"{self.prefix}: no file {name!r} in manifest")


class ArtifactStore:
    """Artifacts in one bucket. Keys come from ``selfimprove.core.keys``."""

    def __init__(self, client: Minio, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @contextlib.contextmanager
    def reaching(self, what: str) -> Iterator[None]:
        """Run client calls, turning an outage of the store into ``StoreUnavailableError``."""
        try:
            yield
        except Exception as exc:
            if unavailable(exc):
                where = getattr(getattr(self.client, "_base_url", None), "host", "") or "the object store"
                raise StoreUnavailableError(
                    f"object store {where} unavailable ({what}): {type(exc).__name__}: {exc}"
                ) from exc
            raise

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> ArtifactStore:
        client = Minio(
            settings.endpoint,
            access_key=settings.access_key.get_secret_value(),
            secret_key=settings.secret_key.get_secret_value(),
            secure=settings.secure,
            region=settings.region,
        )
        return cls(client, settings.bucket)

    def ensure_bucket(self) -> None:
        with self.reaching(f"bucket {self.bucket}"):
            if self.client.bucket_exists(self.bucket):
                return
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # -- single objects -------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes, media_type: str = "application/octet-stream") -> ArtifactRef:
        with self.reaching(f"put {key}"):
            self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=media_type)
        return ArtifactRef(
            uri=self.uri(key), sha256=sha256_bytes(data), bytes=len(data), media_type=media_type
        )

    def put_file(self, key: str, path: Path, media_type: str = "application/octet-stream") -> ArtifactRef:
        digest = sha256_file(path)
        with self.reaching(f"put {key}"):
            self.client.fput_object(self.bucket, key, str(path), content_type=media_type)
        size = path.stat().st_size
        return ArtifactRef(uri=self.uri(key), sha256=digest, bytes=size, media_type=media_type)

    def read_key(self, key: str) -> bytes:
        """An unversioned object of this bucket (a run's state), unverified: it has no manifest."""
        return self._read(key)

    def _read(self, key: str, bucket: str | None = None) -> bytes:
        with self.reaching(f"get {key}"):
            try:
                response = self.client.get_object(bucket or self.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchBucket"):
                    raise ArtifactNotFoundError(
                        f"artifact s3://{bucket or self.bucket}/{key} does not exist"
                    ) from None
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def get_bytes(self, ref: ArtifactRef) -> bytes:
        """The object's bytes, refused unless they match ``ref.sha256`` (and size, when given)."""
        bucket, key = split_uri(ref.uri)
        data = self._read(key, bucket)
        actual = sha256_bytes(data)
        if not ref.sha256:
            raise ArtifactIntegrityError(f"{ref.uri}: reference has no sha256 to verify against")
        if actual != ref.sha256 or (ref.bytes and ref.bytes != len(data)):
            raise ArtifactIntegrityError(
                f"{ref.uri}: sha256 mismatch (expected {ref.sha256}, {ref.bytes} bytes; "
                f"got {actual}, {len(data)} bytes): the artifact was altered or truncated"
            )
        return data

    def exists(self, key: str) -> bool:
        with self.reaching(f"stat {key}"):
            try:
                self.client.stat_object(self.bucket, key)
                return True
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
                    return False
                raise

    def list_keys(self, prefix: str) -> Iterator[str]:
        with self.reaching(f"list {prefix}"):
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                if obj.object_name:
                    yield obj.object_name

    def list_folders(self, prefix: str) -> list[str]:
        """The names of the folders directly under ``prefix`` (``runs/`` -> every run id)."""
        with self.reaching(f"list {prefix}"):
            names = [
                (obj.object_name or "")[len(prefix) :].rstrip("/")
                for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=False)
                if (obj.object_name or "").endswith("/")
            ]
        return [n for n in names if n]

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.list_keys(prefix))
        with self.reaching(f"delete {prefix}"):
            for key in keys:
                self.client.remove_object(self.bucket, key)
        return len(keys)

    # -- folder artifacts -----------------------------------------------------------------------

    def publish(
        self, prefix: str, files: Mapping[str, bytes | Path], meta: Mapping[str, Any] | None = None
    ) -> ArtifactRef:
        """Write ``files`` under ``prefix``, then the manifest; return the manifest's reference."""
        if not prefix.endswith("/"):
            raise ValueError(f"prefix must end with '/': {prefix!r}")
        if not files:
            raise ValueError(f"{prefix}: refusing to publish an empty artifact")
        entries = []
        for name, content in sorted(files.items()):
            if name == MANIFEST or name.startswith("/") or ".." in name.split("/"):
                raise ValueError(f"{prefix}: invalid file name {name!r}")
            media = _media_type(name)
            if isinstance(content, Path):
                ref = self.put_file(prefix + name, content, media)
            else:
                ref = self.put_bytes(prefix + name, content, media)
            entries.append(ManifestEntry(name, ref.sha256, ref.bytes, media))
        manifest = Manifest(prefix=prefix, files=entries, meta=dict(meta or {}))
        return self.put_bytes(prefix + MANIFEST, manifest.to_json(), MANIFEST_TYPE)

    def publish_folder(self, prefix: str, folder: Path, meta: Mapping[str, Any] | None = None) -> ArtifactRef:
        files: dict[str, bytes | Path] = {
            str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()
        }
        return self.publish(prefix, files, meta)

    def find_manifest(self, prefix: str) -> ArtifactRef | None:
        """The reference of a complete artifact under ``prefix``, or None (idempotent handlers use this)."""
        key = prefix + MANIFEST
        try:
            data = self._read(key)
        except ArtifactNotFoundError:
            return None
        return ArtifactRef(
            uri=self.uri(key), sha256=sha256_bytes(data), bytes=len(data), media_type=MANIFEST_TYPE
        )

    def manifest(self, ref: ArtifactRef) -> Manifest:
        return Manifest.from_json(self.get_bytes(ref), ref.uri)

    def _file_ref(self, ref: ArtifactRef, entry: ManifestEntry) -> ArtifactRef:
        base = ref.uri.rsplit("/", 1)[0]
        return ArtifactRef(
            uri=f"{base}/{entry.path}", sha256=entry.sha256, bytes=entry.bytes, media_type=entry.media_type
        )

    def read_file(self, ref: ArtifactRef, name: str) -> bytes:
        """One file of a folder artifact, verified against its manifest."""
        return self.get_bytes(self._file_ref(ref, self.manifest(ref).entry(name)))

    def get_folder(self, ref: ArtifactRef, dest: Path) -> Path:
        """Download and verify every file of a folder artifact into ``dest``; nothing is left half-written."""
        manifest = self.manifest(ref)
        tmp = dest.with_name(dest.name + f".partial-{time.time_ns()}")
        tmp.mkdir(parents=True)
        try:
            for entry in manifest.files:
                target = tmp / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.get_bytes(self._file_ref(ref, entry)))
            if dest.exists():
                _rmtree(dest)
            tmp.rename(dest)
        finally:
            if tmp.exists():
                _rmtree(tmp)
        return dest

    def verify(self, ref: ArtifactRef) -> Manifest:
        """Check the manifest and every file it lists; raise on the first mismatch."""
        manifest = self.manifest(ref)
        for entry in manifest.files:
            self.get_bytes(self._file_ref(ref, entry))
        return manifest


def _media_type(name: str) -> str:
    suffix = Path(name).suffix
    return {
        ".json": "application/json",
        ".jsonl": "application/jsonl",
        ".parquet": "application/vnd.apache.parquet",
        ".safetensors": "application/octet-stream",
        ".md": "text/markdown",
        ".png": "image/png",
        ".yaml": "application/yaml",
    }.get(suffix, "application/octet-stream")


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
