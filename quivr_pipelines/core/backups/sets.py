"""Backup sets in the artifact store, and their retention.

A set is what one backup run took together, under one id: `backups/<id>/manifest.json` plus the
files of its components (`catalog`, `vectors`, `config`), each file listed in the manifest with
its size and sha256. Ids sort in time order (`20261202T021500Z-1a2b3c`). The manifest is written
last, so a set without one is an unfinished run; its files are removed by the retention like
those of an expired component.

Retention is by age per component (e.g. catalog 30 days, vectors 14, configuration 90): an expired
component's files are deleted and the manifest says so; a set whose components have all expired
goes entirely. The newest complete set is never touched, whatever its age: a backup schedule that
stopped must not end with no backup at all.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

PREFIX = "backups/"
MANIFEST = "manifest.json"
COMPLETE, PARTIAL, FAILED = "complete", "partial", "failed"
COMPONENTS = ("catalog", "vectors", "config")


def new_set_id(now: datetime | None = None) -> str:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def set_prefix(set_id: str) -> str:
    return f"{PREFIX}{set_id}/"


@dataclass
class SetManifest:
    """One backup set. `components`: name -> {"files": [{key, size, sha256, ...}], "expired_at"?, ...}."""

    id: str
    created_at: datetime
    status: str = COMPLETE
    components: dict[str, dict] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> collection it served
    generations: dict[str, int] = field(default_factory=dict)  # KB -> serving generation
    encrypted: bool = False
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"id": self.id, "created_at": self.created_at.isoformat(), "status": self.status,
                "components": self.components, "aliases": self.aliases, "generations": self.generations,
                "encrypted": self.encrypted, "errors": self.errors, "format": 1}

    @classmethod
    def from_dict(cls, data: dict) -> SetManifest:
        return cls(id=data["id"], created_at=datetime.fromisoformat(data["created_at"]),
                   status=data.get("status", COMPLETE), components=data.get("components", {}),
                   aliases=data.get("aliases", {}), generations=data.get("generations", {}),
                   encrypted=bool(data.get("encrypted")), errors=data.get("errors", []))

    def live_components(self) -> list[str]:
        return [name for name, part in self.components.items() if not part.get("expired_at")]


def write_manifest(artifacts, manifest: SetManifest) -> None:
    with artifacts.open_write(set_prefix(manifest.id) + MANIFEST) as out:
        out.write(json.dumps(manifest.to_dict(), indent=1, sort_keys=True).encode())


def read_manifest(artifacts, set_id: str) -> SetManifest:
    with artifacts.open_read(set_prefix(set_id) + MANIFEST) as src:
        return SetManifest.from_dict(json.loads(src.read()))


def set_ids(artifacts) -> list[str]:
    """Every set id with a file in the store, finished or not, oldest first."""
    return sorted({info.key[len(PREFIX):].split("/", 1)[0] for info in artifacts.list(PREFIX)
                   if "/" in info.key[len(PREFIX):]})


def list_sets(artifacts) -> list[SetManifest]:
    """The sets with a manifest, oldest first."""
    found = []
    for set_id in set_ids(artifacts):
        if artifacts.head(set_prefix(set_id) + MANIFEST) is not None:
            found.append(read_manifest(artifacts, set_id))
    return found


def latest_complete(sets: Iterable[SetManifest]) -> SetManifest | None:
    complete = [s for s in sets if s.status == COMPLETE]
    return max(complete, key=lambda s: (s.created_at, s.id)) if complete else None


@dataclass(frozen=True)
class Expiry:
    """One thing the retention removes: a component of a set, a whole set, or an unfinished run."""

    set_id: str
    component: str | None  # None: the whole set
    keys: tuple[str, ...]
    bytes: int
    reason: str


def plan_retention(artifacts, keep: dict[str, timedelta], now: datetime | None = None) -> list[Expiry]:
    """What `keep` (component -> age) expires now. A component with no age in `keep` is kept; the
    newest complete set is kept whole; an unfinished run (no manifest) older than the longest age
    in `keep`, or a day, goes; so does a failed run with nothing kept."""
    now = now or datetime.now(UTC)
    sets = {s.id: s for s in list_sets(artifacts)}
    newest = latest_complete(sets.values())
    files: dict[str, list] = {}
    for info in artifacts.list(PREFIX):
        rest = info.key[len(PREFIX):]
        if "/" in rest:
            files.setdefault(rest.split("/", 1)[0], []).append(info)
    plan: list[Expiry] = []
    unfinished_age = max([*keep.values(), timedelta(days=1)])
    for set_id, infos in sorted(files.items()):
        manifest = sets.get(set_id)
        if manifest is None:
            if all(now - info.modified > unfinished_age for info in infos):
                plan.append(Expiry(set_id, None, tuple(i.key for i in infos), sum(i.size for i in infos),
                                   "an unfinished backup run (no manifest)"))
            continue
        if newest is not None and set_id == newest.id:
            continue
        age = now - manifest.created_at
        if manifest.status != COMPLETE and not manifest.live_components() and age > unfinished_age:
            plan.append(Expiry(set_id, None, tuple(i.key for i in infos), sum(i.size for i in infos),
                               f"a {manifest.status} backup run"))
            continue
        expiring = [name for name in manifest.live_components() if name in keep and age > keep[name]]
        if not expiring:
            continue
        if set(expiring) == set(manifest.live_components()):
            plan.append(Expiry(set_id, None, tuple(i.key for i in infos), sum(i.size for i in infos),
                               f"every component past its retention ({_ages(expiring, keep)})"))
            continue
        sizes = {i.key: i.size for i in infos}
        for name in expiring:
            keys = tuple(f["key"] for f in manifest.components[name].get("files", []) if f["key"] in sizes)
            plan.append(Expiry(set_id, name, keys, sum(sizes[k] for k in keys),
                               f"{name} older than {_days(keep[name])}"))
    return plan


def apply_retention(artifacts, plan: list[Expiry], now: datetime | None = None) -> int:
    """Carry out `plan`; returns the bytes freed. A component's files go before its manifest
    says so; a whole set's manifest goes last (until then, the set is listed)."""
    now = now or datetime.now(UTC)
    freed = 0
    for expiry in plan:
        prefix = set_prefix(expiry.set_id)
        ordered = sorted(expiry.keys, key=lambda k: k == prefix + MANIFEST)
        for key in ordered:
            if expiry.component is None or key != prefix + MANIFEST:
                artifacts.delete(key)
        freed += expiry.bytes
        if expiry.component is not None:
            manifest = read_manifest(artifacts, expiry.set_id)
            manifest.components[expiry.component]["expired_at"] = now.isoformat()
            write_manifest(artifacts, manifest)
    return freed


def _days(age: timedelta) -> str:
    return f"{age.total_seconds() / 86400:g} days"


def _ages(names: list[str], keep: dict[str, timedelta]) -> str:
    return ", ".join(f"{name} {_days(keep[name])}" for name in names)
