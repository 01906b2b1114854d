"""Vector backups of the embedded engine, for real: qdrant-edge shards copied under the store's
fence, archived, damaged live data, restored into new collections and compared point by point."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from quivr_pipelines.core import sparse
from quivr_pipelines.core.backups.vectors import (
    CollectionBackup,
    VectorBackupError,
    backup_collection,
    restore_collection,
    verify_archive,
)
from quivr_pipelines.core.keys import point_id
from quivr_pipelines.core.vectorstore.base import PointRecord
from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore

KB, DIM, MODEL = "vault", 16, "local:test:16"
COLLECTION = "kb_vault__local-test-16__g1"


def points(key: str, n: int, seed: int) -> list[PointRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        text = f"{key} chunk {i} about topic {seed % 7}"
        vector = rng.standard_normal(DIM)
        out.append(PointRecord(point_id(KB, key, i), (vector / np.linalg.norm(vector)).tolist(),
                               sparse.document_vector(text),
                               {"kb": KB, "document_key": key, "chunk_index": i, "text": text}))
    return out


def every_point(store, collection):
    found, offset = {}, None
    while True:
        page, offset = store.scroll_points(collection, KB, offset, 100)
        found.update({hit.id: hit.payload for hit in page})
        if offset is None:
            return found


@pytest.fixture
def store(tmp_path):
    s = EmbeddedStore(tmp_path / "qdrant")
    s.ensure_collection(COLLECTION, DIM, MODEL)
    s.replace_documents(COLLECTION, [(KB, f"doc{d:02d}.txt", points(f"doc{d:02d}.txt", 5, d)) for d in range(20)])
    s.set_alias(KB, COLLECTION)
    yield s
    s.close()


def backup(store, collection=COLLECTION) -> tuple[bytes, CollectionBackup]:
    out = io.BytesIO()
    entry = backup_collection(store, collection, out)
    return out.getvalue(), entry


def test_restore_after_damage_gives_back_every_point_exactly(store):
    before = every_point(store, COLLECTION)
    query = points("probe", 1, 99)[0]
    ranked = [h.id for h in store.search(COLLECTION, query.dense, query.sparse, 10)]
    data, entry = backup(store)
    assert entry.points == 100 and entry.dimensions == DIM and entry.fingerprint == MODEL
    assert CollectionBackup.from_dict(entry.to_dict()) == entry
    assert entry.size == len(data) < 5_000_000  # the preallocated zeros compress away

    store.delete_documents(COLLECTION, KB, ["doc00.txt", "doc01.txt"])  # damage the live data
    store.ensure_collection("elsewhere", DIM, MODEL)
    store.set_alias(KB, "elsewhere")
    assert len(every_point(store, COLLECTION)) == 90

    verify_archive(io.BytesIO(data), entry)
    restored = restore_collection(store, io.BytesIO(data), entry, "kb_vault__restored")
    assert restored == 100
    assert every_point(store, "kb_vault__restored") == before
    assert [h.id for h in store.search("kb_vault__restored", query.dense, query.sparse, 10)] == ranked
    info = store.collection_info("kb_vault__restored")
    assert (info.dimensions, info.fingerprint, info.points) == (DIM, MODEL, 100)
    # the restored collection is an ordinary one: writable, and it survives a reopen
    store.delete_documents("kb_vault__restored", KB, ["doc05.txt"])
    reopened = EmbeddedStore(store.root)
    try:
        assert reopened.collection_info("kb_vault__restored").points == 95
    finally:
        reopened.close()


def test_the_archive_is_a_shard_tar_that_qdrant_edge_unpacks(store, tmp_path):
    import gzip

    from qdrant_edge import CountRequest, EdgeShard

    data, entry = backup(store)
    plain = tmp_path / "shard.tar"
    plain.write_bytes(gzip.decompress(data))
    EdgeShard.unpack_snapshot(str(plain), str(tmp_path / "unpacked"))
    shard = EdgeShard.load(str(tmp_path / "unpacked"))
    try:
        assert shard.count(CountRequest(exact=True)) == entry.points
    finally:
        shard.close()


@pytest.mark.parametrize("damage", ["flipped", "truncated", "empty"])
def test_a_damaged_archive_is_refused_by_its_checksum_before_anything_is_written(store, damage):
    data, entry = backup(store)
    bad = {"flipped": data[:100] + bytes([data[100] ^ 1]) + data[101:], "truncated": data[: len(data) // 2],
           "empty": b""}[damage]
    with pytest.raises(VectorBackupError, match="fails its checksum.*nothing was restored"):
        verify_archive(io.BytesIO(bad), entry)
    assert "kb_vault__restored" not in store.list_collections()


def test_an_archive_that_is_not_a_shard_is_refused_and_leaves_nothing(store):
    _, entry = backup(store)
    for members in ({"../escape": b"x"}, {"/abs": b"x"}, {}):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for name, body in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
        with pytest.raises(VectorBackupError):
            restore_collection(store, io.BytesIO(raw.getvalue()), entry, "kb_vault__bad")
        assert "kb_vault__bad" not in store.list_collections()
    with pytest.raises(VectorBackupError, match="not a readable shard tar"):
        restore_collection(store, io.BytesIO(b"not gzip at all"), entry, "kb_vault__bad")
    assert not [p for p in store.root.iterdir() if p.name.startswith(".restore-")]  # scratch removed


def test_a_restore_never_overwrites_a_collection(store):
    data, entry = backup(store)
    with pytest.raises(VectorBackupError, match="already exists"):
        restore_collection(store, io.BytesIO(data), entry, COLLECTION)
    assert len(every_point(store, COLLECTION)) == 100


WRITER = """
import sys, time
from pathlib import Path
from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore
from quivr_pipelines_tests.core.test_backup_vectors import COLLECTION, KB, points
store = EmbeddedStore(Path(sys.argv[1]))
n = 0
while not Path(sys.argv[2]).exists():
    key = f"live{n:04d}.txt"
    store.replace_document(COLLECTION, KB, key, points(key, 3, 1000 + n))
    n += 1
    print(n, flush=True)
store.close()
"""


def test_a_backup_taken_while_another_process_writes_is_consistent(store, tmp_path):
    """A writer process replaces documents in a loop; the backup holds a whole number of its writes
    (no torn document, no torn shard) and restores to exactly its count."""
    stop = tmp_path / "stop"
    root = Path(__file__).resolve().parents[2]
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(store.root), str(stop)], cwd=root,
                              env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # it has written
            assert writer.stdout.readline(), "the writer process died"
        data, entry = backup(store)
        assert writer.poll() is None, "the writer stopped before the backup ended"
    finally:
        stop.touch()
        writer.communicate(timeout=60)
    assert writer.returncode == 0
    assert (entry.points - 100) % 3 == 0 and entry.points > 100  # whole documents, no torn write
    verify_archive(io.BytesIO(data), entry)
    assert restore_collection(store, io.BytesIO(data), entry, "kb_vault__snap") == entry.points
    restored = every_point(store, "kb_vault__snap")
    keys = {p["document_key"] for p in restored.values()}
    assert all(sum(1 for p in restored.values() if p["document_key"] == k) == (3 if k.startswith("live") else 5)
               for k in keys)
