"""The artifact store (a local folder and an fsspec URL) and the API keys in the catalog."""

from __future__ import annotations

import pytest

from neurflow.service.storage.artifacts import ArtifactStore
from neurflow.service.storage.db import Database


@pytest.mark.parametrize("url", ["local", "memory://nf-test-store"])
def test_artifact_store(tmp_path, url):
    store = ArtifactStore(str(tmp_path / "art") if url == "local" else url, cache_dir=tmp_path / "cache")
    store.put_bytes("a/b/c.txt", b"hello")
    assert store.get_bytes("a/b/c.txt") == b"hello" and store.exists("a/b/c.txt")
    (tmp_path / "dir/sub").mkdir(parents=True)
    (tmp_path / "dir/sub/x.bin").write_bytes(b"xyz")
    store.put_dir("folder", tmp_path / "dir")
    assert store.get_bytes("folder/sub/x.bin") == b"xyz"
    assert store.local_path("folder/sub/x.bin").read_bytes() == b"xyz"
    assert (store.local_path("folder") / "sub/x.bin").read_bytes() == b"xyz"
    for bad in ("../x", "/abs", "a/../../b", ""):
        with pytest.raises(ValueError):
            store.path(bad)
    store.delete("folder")
    assert not store.exists("folder/sub/x.bin")
    with pytest.raises(KeyError):
        store.get_bytes("folder/sub/x.bin")
    assert store.ping()



def test_keys_cli(tmp_path, capsys):
    from neurflow.cli import main

    assert main(["keys", "create", "alice", "--data-dir", str(tmp_path)]) == 0
    key = capsys.readouterr().out.strip()
    from neurflow.service.storage.catalog import Catalog

    catalog = Catalog(Database(tmp_path / "neurflow.db"))
    owner = catalog.owner_for_key(key)
    assert owner and owner.startswith("k-")
    assert all(key.encode() not in p.read_bytes() for p in tmp_path.glob("neurflow.db*"))  # only the hash is stored
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    assert "alice" in capsys.readouterr().out
    assert main(["keys", "revoke", owner, "--data-dir", str(tmp_path)]) == 0
    assert catalog.owner_for_key(key) is None
    assert main(["keys", "revoke", "k-nope", "--data-dir", str(tmp_path)]) == 2
