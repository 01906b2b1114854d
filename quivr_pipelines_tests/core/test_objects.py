"""Both object stores behave the same: the local folder and S3 over a real HTTP server (moto)."""

import boto3
import pytest

from quivr_pipelines.core.errors import IngestionError
from quivr_pipelines.core.objects import LocalFolderStore, S3Store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalFolderStore(tmp_path / "root")
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Store(bucket, prefix="tenants/acme", endpoint_url=server, region="us-east-1")


def test_put_list_head_read(store):
    store.put("kb1", "b/two.txt", b"two")
    store.put("kb1", "a.txt", b"one")
    store.put("kb2", "z.md", b"# z")
    assert store.list_kbs() == ["kb1", "kb2"]
    listed = list(store.list_objects("kb1"))
    assert [o.key for o in listed] == ["a.txt", "b/two.txt"]
    assert [o.key for o in store.list_objects("kb1", start_after="a.txt")] == ["b/two.txt"]
    head = store.head("kb1", "a.txt")
    assert head.size == 3 and head.etag
    assert store.read("kb1", "a.txt", max_bytes=10).data == b"one"
    assert store.head("kb1", "missing.txt") is None


def test_hidden_objects_are_not_listed_but_can_be_read(store):
    """Dot-files and dot-folders (a KB's `.quivr/golden.jsonl`) are never ingested."""
    store.put("kb1", "doc.txt", b"one")
    store.put("kb1", ".quivr/golden.jsonl", b"{}")
    store.put("kb1", "notes/.hidden.txt", b"x")
    store.put("kb1", "notes/.cache/x.txt", b"x")
    store.put("kb1", "notes/a.b.txt", b"kept")
    assert [o.key for o in store.list_objects("kb1")] == ["doc.txt", "notes/a.b.txt"]
    assert store.head("kb1", ".quivr/golden.jsonl").size == 2
    assert store.read("kb1", ".quivr/golden.jsonl", max_bytes=10).data == b"{}"


def test_changed_object_gets_a_new_etag(store):
    first = store.put("kb1", "doc.txt", b"version one")
    second = store.put("kb1", "doc.txt", b"version two, longer")
    assert first.etag != second.etag


def test_too_large_is_refused_before_reading_everything(store):
    store.put("kb1", "big.bin", b"x" * 2048)
    with pytest.raises(IngestionError) as excinfo:
        store.read("kb1", "big.bin", max_bytes=1024)
    assert excinfo.value.error_type == "too_large"


@pytest.mark.parametrize("key", ["../outside.txt", "/etc/passwd", "a/../../b", "ctl\x07.txt"])
def test_hostile_keys_never_reach_storage(store, key):
    with pytest.raises(IngestionError) as excinfo:
        store.put("kb1", key, b"evil")
    assert excinfo.value.error_type == "hostile_key"
    with pytest.raises(IngestionError):
        store.read("kb1", key, max_bytes=100)


def test_local_store_never_follows_a_symlink_out_of_its_root(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    root = tmp_path / "root"
    (root / "kb1").mkdir(parents=True)
    (root / "kb1" / "link.txt").symlink_to(secret)
    (root / "kb1" / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    store = LocalFolderStore(root)
    listed = {info.key: info.refused for info in store.list_objects("kb1")}  # listed, to be recorded
    assert set(listed) == {"link.txt", "dirlink"} and all("symbolic link" in r for r in listed.values())
    with pytest.raises(IngestionError) as excinfo:
        store.read("kb1", "link.txt", max_bytes=100)
    assert excinfo.value.error_type == "hostile_key"
    with pytest.raises(IngestionError):
        store.read("kb1", "dirlink/secret.txt", max_bytes=100)


def test_s3_lists_more_than_one_page(s3_server, s3_bucket):
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    for i in range(1205):
        client.put_object(Bucket=s3_bucket, Key=f"kb1/doc-{i:05d}.txt", Body=b"x")
    store = S3Store(s3_bucket, endpoint_url=s3_server, region="us-east-1")
    keys = [o.key for o in store.list_objects("kb1")]
    assert len(keys) == 1205 and keys == sorted(keys)
