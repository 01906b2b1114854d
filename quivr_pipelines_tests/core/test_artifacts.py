"""Both artifact stores behave the same: a local folder and S3 over a real HTTP server (moto)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path

import boto3
import pytest
from pydantic import ValidationError

from quivr_pipelines.core.artifacts import (
    DEFAULT_PART_SIZE,
    ArtifactNotFound,
    LocalArtifactStore,
    S3ArtifactStore,
    build_artifact_store,
)

MiB = 1024 * 1024
PREFIX = "tenants/acme/artifacts"


@pytest.fixture
def s3_client(s3_server, s3_bucket):
    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    client = request.getfixturevalue("s3_client")
    return S3ArtifactStore(client, request.getfixturevalue("s3_bucket"), prefix=PREFIX)


def _chunks(total: int, size: int = 64 * 1024, seed: bytes = b"artifact"):
    """Deterministic, incompressible chunks generated on the fly."""
    block = hashlib.sha256(seed).digest() * (size // 32)
    for index in range(0, total, size):
        yield hashlib.sha256(index.to_bytes(8, "big")).digest() + block[32:min(size, total - index)]


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_round_trip_of_12_mb_in_chunks(store):
    expected = hashlib.sha256()
    with store.open_write("backups/2026-12-02/catalog.dump") as out:
        for chunk in _chunks(12 * MiB):
            out.write(chunk)
            expected.update(chunk)
        assert out.tell() == 12 * MiB
    read = hashlib.sha256()
    with store.open_read("backups/2026-12-02/catalog.dump") as src:
        while chunk := src.read(256 * 1024):
            read.update(chunk)
    assert read.hexdigest() == expected.hexdigest()
    info = store.head("backups/2026-12-02/catalog.dump")
    assert info.size == 12 * MiB and info.modified.tzinfo is not None
    assert info.modified.utcoffset().total_seconds() == 0
    if isinstance(store, S3ArtifactStore):  # two 8 MiB parts at most: a multipart ETag
        head = store.client.head_object(Bucket=store.bucket, Key=f"{PREFIX}/backups/2026-12-02/catalog.dump",
                                        ChecksumMode="ENABLED")
        assert head["ETag"].strip('"').endswith("-2")
        assert head.get("ChecksumCRC32")  # the parts' checksums went through, as upload_fileobj sends them


_WRITE_40_MB = """
import json, sys, tracemalloc
from pathlib import Path
config = json.loads(sys.argv[1])
from quivr_pipelines.core.artifacts import LocalArtifactStore, S3ArtifactStore
if config["kind"] == "local":
    store = LocalArtifactStore(Path(config["root"]))
else:
    import boto3
    client = boto3.client("s3", endpoint_url=config["endpoint"], region_name="us-east-1")
    store = S3ArtifactStore(client, config["bucket"], prefix="p")
chunk = bytes(range(256)) * 4096  # 1 MiB, the same object every time: the stream costs nothing
tracemalloc.start()
with store.open_write("big.bin") as out:
    for _ in range(40):
        out.write(chunk)
print(tracemalloc.get_traced_memory()[1])
"""


def test_writing_40_mb_never_holds_the_whole_stream(store, tmp_path):
    """Traced in a child process: moto's server runs in this one and keeps what it receives."""
    if isinstance(store, S3ArtifactStore):
        config = {"kind": "s3", "endpoint": store.client.meta.endpoint_url, "bucket": store.bucket}
    else:
        config = {"kind": "local", "root": str(store.root)}
    done = subprocess.run([sys.executable, "-c", _WRITE_40_MB, json.dumps(config)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, check=False)
    assert done.returncode == 0, done.stderr
    peak = int(done.stdout.strip().splitlines()[-1])
    # One part buffered at most (8 MiB on S3; measured 8.3 MiB traced, 0.01 MiB locally).
    assert peak < DEFAULT_PART_SIZE + 4 * MiB, f"peak {peak / MiB:.1f} MiB while writing 40 MiB"
    if isinstance(store, S3ArtifactStore):
        assert store.client.head_object(Bucket=store.bucket, Key="p/big.bin")["ContentLength"] == 40 * MiB
    else:
        assert store.head("big.bin").size == 40 * MiB


@pytest.mark.parametrize("size", [1000, 9 * MiB], ids=["one-request", "multipart"])
def test_a_failed_write_leaves_nothing(store, tmp_path, size):
    with pytest.raises(RuntimeError, match="disk on fire"), store.open_write("backups/broken.tar") as out:
        for chunk in _chunks(size):
            out.write(chunk)
        raise RuntimeError("disk on fire")
    assert store.head("backups/broken.tar") is None
    assert list(store.list()) == []
    if isinstance(store, S3ArtifactStore):
        assert store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []
    else:
        assert _leftovers(store.root) == ["backups"]  # the folder, no temporary file


def test_a_failed_write_keeps_the_previous_version(store):
    with store.open_write("report.json") as out:
        out.write(b'{"v": 1}')
    with pytest.raises(RuntimeError), store.open_write("report.json") as out:
        out.write(b'{"v": 2, "trunc')
        raise RuntimeError("interrupted")
    with store.open_read("report.json") as src:
        assert src.read() == b'{"v": 1}'


def test_list_is_sorted_all_pages_and_prefix_delete(store):
    keys = [f"many/{i}" for i in range(1005)]  # unpadded: creation order is not key order

    def write(key):
        with store.open_write(key) as out:
            out.write(key.encode())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, [*keys, "other/x", "many-not/y"]))
    listed = [info.key for info in store.list("many/")]
    assert listed == sorted(keys)
    assert [info.key for info in store.list("many/100")] == ["many/100", "many/1000", "many/1001",
                                                              "many/1002", "many/1003", "many/1004"]
    every = [info.key for info in store.list()]
    assert every == sorted([*keys, "other/x", "many-not/y"])
    assert store.delete_prefix("many/") == 1005
    assert [info.key for info in store.list()] == ["many-not/y", "other/x"]


def test_put_file_get_file(store, tmp_path):
    source = tmp_path / "dump.bin"
    with open(source, "wb") as handle:
        for chunk in _chunks(6 * MiB):
            handle.write(chunk)
    put = store.put_file("backups/dump.bin", source)
    assert put.key == "backups/dump.bin" and put.size == source.stat().st_size
    target = tmp_path / "restore" / "dump.bin"
    got = store.get_file("backups/dump.bin", target)
    assert got.size == put.size and got.modified.tzinfo is not None
    assert target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["dump.bin"]  # no temporary file left


def test_missing_artifact_names_its_uri(store, tmp_path):
    with pytest.raises(ArtifactNotFound) as excinfo, store.open_read("backups/nope.tar"):
        pass
    assert isinstance(excinfo.value, KeyError)
    assert str(excinfo.value) == f"no artifact at {store.uri('backups/nope.tar')}"
    target = tmp_path / "keep.txt"
    target.write_text("previous restore")
    with pytest.raises(ArtifactNotFound, match="nope.tar"):
        store.get_file("backups/nope.tar", target)
    assert target.read_text() == "previous restore"
    assert store.head("backups/nope.tar") is None


def test_delete_is_idempotent(store):
    store.delete("never/written.txt")
    with store.open_write("reports/a/b.txt") as out:
        out.write(b"x")
    store.delete("reports/a/b.txt")
    store.delete("reports/a/b.txt")
    assert store.head("reports/a/b.txt") is None and list(store.list()) == []
    if isinstance(store, LocalArtifactStore):
        assert _leftovers(store.root) == []  # emptied folders go too


def test_uri(store):
    if isinstance(store, S3ArtifactStore):
        assert store.uri("a/b.txt") == f"s3://{store.bucket}/{PREFIX}/a/b.txt"
    else:
        assert store.uri("a/b.txt") == (store.root / "a" / "b.txt").as_uri()


HOSTILE = {
    "empty": ("", "empty"),
    "absolute": ("/etc/passwd", "absolute path"),
    "windows-absolute": ("C:/x", "absolute path"),
    "parent": ("../outside.txt", "'..'"),
    "parent-inside": ("a/../../b", "'..'"),
    "dot": ("a/./b", "'.'"),
    "empty-segment": ("a//b", "empty path segment"),
    "trailing-slash": ("a/", "empty path segment"),
    "nul": ("a\x00b", "control characters"),
    "control": ("bell\x07.txt", "control characters"),
    "newline": ("two\nlines", "control characters"),
    "bidi": ("gpj\u202e.exe", "bidirectional"),
    "too-long": ("x" * 1025, "longer than 1024 bytes"),
    "too-long-utf8": ("é" * 513, "longer than 1024 bytes"),
    "backslash": ("a\\b", "backslash"),
    "backslash-parent": ("a\\..\\b", "'..'"),  # a Windows path climbing out
    "temporary-name": ("a/.b.artifact-tmp", "reserved"),
}


@pytest.mark.parametrize(("key", "reason"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_keys_are_refused_before_any_io(store, key, reason):
    calls = [
        lambda: store.open_write(key).__enter__(),
        lambda: store.open_read(key).__enter__(),
        lambda: store.head(key),
        lambda: store.delete(key),
        lambda: store.uri(key),
    ]
    for call in calls:
        with pytest.raises(ValueError) as excinfo:
            call()
        message = str(excinfo.value)
        assert reason in message and message.startswith("invalid artifact key ") and "\n" not in message
    with pytest.raises(ValueError):
        list(store.list("../"))
    with pytest.raises(ValueError, match="non-empty prefix"):
        store.delete_prefix("")
    if isinstance(store, LocalArtifactStore):
        assert _leftovers(store.root) == []


def test_local_store_never_writes_through_a_link_out_of_its_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "artifacts"
    root.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    store = LocalArtifactStore(root)
    with pytest.raises(ValueError, match="resolves outside"), store.open_write("escape/x.txt") as out:
        out.write(b"x")
    with pytest.raises(ValueError, match="resolves outside"):
        store.put_file("escape/y.txt", __file__)
    assert list(outside.iterdir()) == [] and list(store.list()) == []


def test_server_side_encryption_reaches_every_object(s3_client, s3_bucket):
    store = S3ArtifactStore(s3_client, s3_bucket, prefix="enc", sse="AES256")
    with store.open_write("small.txt") as out:
        out.write(b"tiny")
    with store.open_write("large.bin") as out:
        for chunk in _chunks(9 * MiB):
            out.write(chunk)
    for key in ("enc/small.txt", "enc/large.bin"):
        assert s3_client.head_object(Bucket=s3_bucket, Key=key)["ServerSideEncryption"] == "AES256"
    with pytest.raises(ValueError, match="aws:kms"):
        S3ArtifactStore(s3_client, s3_bucket, sse="AES256", sse_kms_key_id="alias/backups")
    with pytest.raises(ValueError, match="minimum"):
        S3ArtifactStore(s3_client, s3_bucket, part_size=MiB)
    with pytest.raises(ValueError, match="invalid artifact key '../x'"):
        S3ArtifactStore(s3_client, s3_bucket, prefix="../x")


# Settings: where artifacts go by default, and what is refused.


@pytest.fixture
def env(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("QUIVR_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("QUIVR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no stray .env
    return monkeypatch


def _settings():
    from quivr_pipelines.settings import Settings

    return Settings()


def test_default_artifacts_dir_is_outside_the_inbox(env, tmp_path):
    settings = _settings()
    assert settings.artifacts_dir == (tmp_path / "data" / "artifacts").resolve()
    assert not settings.artifacts_dir.is_relative_to(settings.inbox_dir)
    assert not settings.inbox_dir.is_relative_to(settings.artifacts_dir)
    store = build_artifact_store(settings)
    assert isinstance(store, LocalArtifactStore) and store.root == settings.artifacts_dir
    assert settings.artifacts_dir.is_dir()


@pytest.mark.parametrize("variables", [
    {"QUIVR_ARTIFACTS_URI": "{data}/inbox/backups"},
    {"QUIVR_ARTIFACTS_URI": "{data}/inbox"},
    {"QUIVR_ARTIFACTS_URI": "{data}"},  # the inbox would be inside the artifacts
    {"QUIVR_LOCAL_ROOT": "{data}"},  # the default <data>/artifacts would become a KB
], ids=["inside", "same", "around", "local-root-around-default"])
def test_artifacts_overlapping_the_inbox_are_refused(env, tmp_path, variables):
    for name, value in variables.items():
        env.setenv(name, value.format(data=tmp_path / "data"))
    with pytest.raises(ValidationError, match="overlaps the documents inbox"):
        _settings()


@pytest.mark.parametrize(("documents_prefix", "artifacts_uri", "refused"), [
    ("", "s3://docs", True),
    ("", "s3://docs/", True),
    ("", "s3://docs/backups", True),  # "backups" would be listed as a knowledge base
    ("documents", "s3://docs/documents/backups", True),
    ("documents", "s3://docs/documents", True),
    ("tenant/documents", "s3://docs/tenant", True),  # a prefix delete could reach the documents
    ("documents", "s3://docs/artifacts", False),
    ("documents", "s3://docs/documents-artifacts", False),
    ("", "s3://other-bucket", False),
])
def test_artifacts_overlapping_the_documents_bucket_are_refused(env, documents_prefix, artifacts_uri, refused):
    env.setenv("QUIVR_OBJECT_STORE", "s3")
    env.setenv("QUIVR_S3_BUCKET", "docs")
    env.setenv("QUIVR_S3_PREFIX", documents_prefix)
    env.setenv("QUIVR_ARTIFACTS_URI", artifacts_uri)
    if refused:
        with pytest.raises(ValidationError, match="overlaps the documents at s3://docs/"):
            _settings()
    else:
        assert _settings().artifacts_s3 == (artifacts_uri[5:].partition("/")[0], artifacts_uri[5:].partition("/")[2])


@pytest.mark.parametrize(("variables", "message"), [
    ({"QUIVR_ARTIFACTS_URI": "gs://bucket/x"}, "neither an s3://bucket/prefix URI nor a folder"),
    ({"QUIVR_ARTIFACTS_URI": "s3:///x"}, "names no bucket"),
    ({"QUIVR_ARTIFACTS_URI": "s3://b/a/../../x"}, "'..' path segments"),
    ({"QUIVR_ARTIFACTS_S3_SSE": "AES256"}, "applies to s3:// artifacts only"),
    ({"QUIVR_ARTIFACTS_URI": "s3://b/p", "QUIVR_ARTIFACTS_S3_KMS_KEY_ID": "k"}, "needs QUIVR_ARTIFACTS_S3_SSE=aws:kms"),
    ({"QUIVR_ARTIFACTS_URI": "s3://b/p", "QUIVR_ARTIFACTS_S3_SSE": "DES"}, "artifacts_s3_sse"),
])
def test_artifact_settings_are_checked(env, variables, message):
    for name, value in variables.items():
        env.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        _settings()


def test_build_artifact_store_on_s3_uses_the_document_store_endpoint(env, s3_server, s3_bucket, s3_client):
    env.setenv("QUIVR_S3_ENDPOINT_URL", s3_server)
    env.setenv("QUIVR_S3_REGION", "us-east-1")
    env.setenv("QUIVR_ARTIFACTS_URI", f"s3://{s3_bucket}/backups/")
    env.setenv("QUIVR_ARTIFACTS_S3_SSE", "AES256")
    store = build_artifact_store(_settings())
    assert isinstance(store, S3ArtifactStore) and store.prefix == "backups/"
    with store.open_write("2026/x.txt") as out:
        out.write(b"x")
    head = s3_client.head_object(Bucket=s3_bucket, Key="backups/2026/x.txt")
    assert head["ServerSideEncryption"] == "AES256"
    assert [i.key for i in store.list()] == ["2026/x.txt"]
    assert store.head("2026/x.txt").modified.tzinfo == UTC
