"""Per-KB document health from the catalog: what the Dagster UI and `status` show.

The catalog, not the Dagster event log, is the record of every document: it holds one row per
object whatever the number of documents, so these reads stay cheap at millions of documents
(an index on (kb, status) serves both queries).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from psycopg.rows import dict_row

from quivr_pipelines.core.catalog.database import Database


@dataclass(frozen=True)
class KbHealth:
    kb: str
    ingested: int = 0
    skipped: int = 0
    failed: int = 0
    pending: int = 0
    deleted: int = 0
    chunks: int = 0
    warned: int = 0  # ingested with a warning (pages no reader could read): counted in `ingested` too

    @property
    def documents(self) -> int:
        """Documents in the store as far as the catalog knows (deleted ones are not)."""
        return self.ingested + self.skipped + self.failed + self.pending

    @property
    def healthy(self) -> bool:
        return self.failed == 0 and self.skipped == 0 and self.warned == 0

    def summary(self) -> str:
        warned = f" ({self.warned} with warnings)" if self.warned else ""
        return (f"{self.ingested} ingested{warned}, {self.failed} failed, {self.skipped} skipped, "
                f"{self.pending} pending of {self.documents} documents")

    def as_dict(self) -> dict[str, int]:
        fields = asdict(self)
        fields.pop("kb")
        return {"documents": self.documents, **fields}


def kb_health(db: Database, kbs: Sequence[str] | None = None) -> dict[str, KbHealth]:
    """Counts by status for every KB (or `kbs`), KBs with no documents included."""
    sql = (
        "SELECT k.name AS kb,"
        " count(d.object_key) FILTER (WHERE d.status = 'ingested') AS ingested,"
        " count(d.object_key) FILTER (WHERE d.status = 'skipped') AS skipped,"
        " count(d.object_key) FILTER (WHERE d.status = 'failed') AS failed,"
        " count(d.object_key) FILTER (WHERE d.status = 'pending') AS pending,"
        " count(d.object_key) FILTER (WHERE d.status = 'deleted') AS deleted,"
        " coalesce(sum(d.chunk_count) FILTER (WHERE d.status = 'ingested'), 0) AS chunks,"
        " count(d.object_key) FILTER (WHERE d.status = 'ingested' AND d.warning IS NOT NULL) AS warned"
        " FROM knowledge_bases k LEFT JOIN documents d ON d.kb = k.name"
    )
    params: tuple = ()
    if kbs is not None:
        sql += " WHERE k.name = ANY(%s)"
        params = (list(kbs),)
    sql += " GROUP BY k.name ORDER BY k.name"
    with db.transaction() as conn:
        rows = conn.cursor(row_factory=dict_row).execute(sql, params).fetchall()
    return {row["kb"]: KbHealth(**{k: int(v) if k != "kb" else v for k, v in row.items()}) for row in rows}


def problem_documents(db: Database, kb: str, limit: int) -> list[dict]:
    """The KB's failed documents, then its skipped ones, then those ingested with a warning
    (error type `unread_pages`, the warning as the reason), most recent first."""
    with db.transaction() as conn:
        return conn.cursor(row_factory=dict_row).execute(
            "SELECT object_key, status,"
            " CASE WHEN status = 'ingested' THEN 'unread_pages' ELSE error_type END AS error_type,"
            " CASE WHEN status = 'ingested' THEN warning ELSE failure_reason END AS failure_reason,"
            " updated_at FROM documents"
            " WHERE kb = %s AND (status IN ('failed', 'skipped') OR (status = 'ingested' AND warning IS NOT NULL))"
            " ORDER BY status = 'ingested', status = 'skipped', updated_at DESC, object_key LIMIT %s",
            (kb, limit),
        ).fetchall()
