"""One content type per file type, whatever happened to the document: the catalog row of a failed
document and of an ingested one of the same extension agree (they did not for .rst, .org,
.ndjson and .msg when the object store and the parser each had a table)."""

import mimetypes
import multiprocessing
from dataclasses import replace

import pytest

from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.core.catalog.repository import KbConfig
from quivr_pipelines.core.content_types import content_type_for
from quivr_pipelines.core.errors import DocumentStatus, ErrorType
from quivr_pipelines.core.objects import LocalFolderStore
from quivr_pipelines.core.parsing import SUPPORTED_EXTENSIONS, UNSUPPORTED_REASONS
from quivr_pipelines.core.parsing.workers import ParserPool
from quivr_pipelines.core.pipeline import IngestionContext, ingest_documents
from quivr_pipelines_tests.conftest import DOCS

REGISTRY = sorted(SUPPORTED_EXTENSIONS | set(UNSUPPORTED_REASONS))
# A readable sample per extension; the first four are those the two old tables disagreed on.
SAMPLES = {
    ".rst": "README.rst", ".org": "README.org", ".ndjson": "simple.ndjson", ".msg": "fake-email-attachment.msg",
    ".md": "README.md", ".txt": "fake-text.txt", ".xml": "factbook.xml", ".json": "simple.json",
    ".tsv": "stanley-cups.tsv", ".pptx": "fake-power-point.pptx",
}
CONFIG = KbConfig(name="", chunk_max_characters=1500, chunk_new_after_characters=1200,
                  chunk_combine_under_characters=200, chunk_overlap_characters=0)


@pytest.mark.parametrize("extension", sorted(SUPPORTED_EXTENSIONS))
def test_every_parsed_extension_has_a_content_type(extension):
    """The parser falls back to what the store declared only for extensions the table lacks;
    for those the two could differ, so no supported extension may be missing."""
    assert content_type_for(f"folder/document{extension}")
    assert content_type_for(f"DOCUMENT{extension.upper()}") == content_type_for(f"document{extension}")


@pytest.mark.parametrize("extension", REGISTRY)
def test_the_local_store_declares_the_table_content_type(tmp_path, extension):
    info = LocalFolderStore(tmp_path).put("kb", f"sub/document{extension}", b"x")
    assert info.content_type == content_type_for(f"document{extension}")


def test_the_process_wide_mimetypes_registry_is_left_alone():
    before = mimetypes.guess_type("notes.org", strict=False)
    content_type_for("notes.org")
    assert mimetypes.guess_type("notes.org", strict=False) == before


@pytest.fixture
def catalog(postgres_dsn, db_schema):
    db = Database(postgres_dsn, schema=db_schema)
    yield db
    db.close()


@pytest.fixture
def ingestion(tmp_path, catalog):
    from quivr_pipelines.core.embedding.local import LocalEmbedder
    from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore

    vectors = EmbeddedStore(tmp_path / "qdrant")
    yield IngestionContext(store=LocalFolderStore(tmp_path / "inbox"), vectors=vectors,
                           embedder=LocalEmbedder.load(), db=catalog, defaults=CONFIG, max_bytes=10 << 20)
    vectors.close()


def test_a_failed_and_an_ingested_document_of_one_type_record_one_content_type(ingestion):
    for extension, sample in SAMPLES.items():
        ingestion.store.put("kb1", f"good{extension}", (DOCS / sample).read_bytes())
        ingestion.store.put("kb1", f"empty{extension}", b"")
    keys = [f"{name}{extension}" for extension in SAMPLES for name in ("good", "empty")]

    with ParserPool(workers=1) as parser:
        outcomes = {o.object_key: o for o in ingest_documents(replace(ingestion, parser=parser), "kb1", keys)}
        assert not parser.closed  # the caller's pool is the caller's to close

    rows = repository.get_documents(ingestion.db, "kb1")
    for extension in SAMPLES:
        good, empty = outcomes[f"good{extension}"], outcomes[f"empty{extension}"]
        assert good.status == DocumentStatus.INGESTED, (extension, good.reason)
        assert (empty.status, empty.error_type) == (DocumentStatus.SKIPPED, ErrorType.EMPTY)
        recorded = {rows[f"good{extension}"]["content_type"], rows[f"empty{extension}"]["content_type"]}
        assert recorded == {content_type_for(f"x{extension}")}, extension
    assert all(point.payload["content_type"] == content_type_for(point.payload["document_key"])
               for point in ingestion.vectors.document_points(
                   ingestion.vectors.resolve_alias("kb1"), "kb1", "good.rst"))


def test_without_a_pool_each_call_starts_one_and_stops_it(ingestion):
    keys = [f"doc-{i}.txt" for i in range(6)]  # enough to start workers
    for key in keys:
        ingestion.store.put("kb1", key, f"{key} is about rivers and their deltas.".encode())
    outcomes = ingest_documents(ingestion, "kb1", keys)
    assert all(o.status == DocumentStatus.INGESTED for o in outcomes)
    assert multiprocessing.active_children() == []
