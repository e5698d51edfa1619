"""The artifact store against the real SeaweedFS."""

import pytest
from minio import Minio
from minio.error import S3Error

from selfimprove.core.keys import attempt_prefix
from selfimprove.core.store import ArtifactIntegrityError, ArtifactNotFoundError
from tests.support.buskit import artifact_store

pytestmark = pytest.mark.integration


def test_folder_round_trip_with_manifest(stack, unique_name, tmp_path):
    store = artifact_store(stack)
    src = tmp_path / "adapter"
    (src / "sub").mkdir(parents=True)
    (src / "adapter_config.json").write_text('{"r": 8}')
    (src / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 100)
    prefix = attempt_prefix(unique_name, 1, "train", 0, 1)
    assert store.find_manifest(prefix) is None
    ref = store.publish_folder(prefix, src, {"steps": 5})
    assert store.find_manifest(prefix) == ref
    manifest = store.verify(ref)
    assert {e.path for e in manifest.files} == {"adapter_config.json", "sub/weights.bin"}
    assert manifest.meta == {"steps": 5}
    out = store.get_folder(ref, tmp_path / "out")
    assert (out / "sub" / "weights.bin").read_bytes() == (src / "sub" / "weights.bin").read_bytes()
    assert store.read_file(ref, "adapter_config.json") == b'{"r": 8}'


def test_altered_bytes_are_refused(stack, unique_name, tmp_path):
    store = artifact_store(stack)
    prefix = attempt_prefix(unique_name, 1, "select", 0, 1)
    ref = store.publish(prefix, {"sft.jsonl": b'{"prompt": "1+1", "response": "2"}\n'})
    store.put_bytes(prefix + "sft.jsonl", b'{"prompt": "1+1", "response": "3"}\n')  # tampered
    with pytest.raises(ArtifactIntegrityError, match="sha256 mismatch"):
        store.read_file(ref, "sft.jsonl")
    with pytest.raises(ArtifactIntegrityError):
        store.get_folder(ref, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()  # nothing half-written
    truncated = store.put_bytes(prefix + "x.bin", b"abcdef")
    store.put_bytes(prefix + "x.bin", b"abc")
    with pytest.raises(ArtifactIntegrityError, match="altered or truncated"):
        store.get_bytes(truncated)


def test_missing_artifact_is_named(stack, unique_name):
    store = artifact_store(stack)
    ref = store.put_bytes(f"runs/{unique_name}/a.bin", b"x")
    ref.uri = ref.uri.replace("a.bin", "b.bin")
    with pytest.raises(ArtifactNotFoundError, match="b.bin does not exist"):
        store.get_bytes(ref)


def test_anonymous_access_is_refused(stack, unique_name):
    store = artifact_store(stack)
    store.put_bytes(f"runs/{unique_name}/secret.bin", b"x")
    anonymous = Minio(stack.s3_endpoint, secure=False)
    with pytest.raises(S3Error) as refused:
        anonymous.get_object(stack.bucket, f"runs/{unique_name}/secret.bin").read()
    assert refused.value.code == "AccessDenied"
