"""``run:`` model references fetch the adapter from the real object store, verified, into the cache."""

import pytest

from selfimprove.cli.modelref import local_model
from selfimprove.core.keys import attempt_prefix
from selfimprove.core.store import ArtifactIntegrityError
from tests.support.buskit import artifact_store

pytestmark = pytest.mark.integration


def test_lineage_model_adapter_is_fetched_and_verified(stack, unique_name, tmp_path, monkeypatch):
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    store = artifact_store(stack)
    src = tmp_path / "adapter"
    src.mkdir()
    (src / "adapter_config.json").write_text('{"r": 8}')
    (src / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    prefix = attempt_prefix(unique_name, 1, "train", 0, 1)
    ref = store.publish_folder(prefix, src)
    model = {"base": "b", "adapter": {"uri": ref.uri, "sha256": ref.sha256, "bytes": ref.bytes}}
    assert local_model({"base": "b"}, tmp_path / "cache") == ("b", None)
    base, folder = local_model(model, tmp_path / "cache")
    assert base == "b" and (folder / "adapter_config.json").read_text() == '{"r": 8}'
    assert folder.parent == tmp_path / "cache" / "adapters"
    store.put_bytes(prefix + "adapter_model.safetensors", b"\x01" * 64)  # altered in the store
    with pytest.raises(ArtifactIntegrityError):
        local_model(model, tmp_path / "other-cache")
