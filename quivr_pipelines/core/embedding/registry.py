"""The configured embedders, found by the fingerprint a collection records (issue 11).

A KB's alias may point at a collection of another model than the deployment's default (a
re-embedding swaps it), so readers pick the embedder per collection instead of refusing it:

- the default (`QUIVR_EMBEDDER` & co., `core.factory.build_embedder`), probed at start-up;
- the local model, always: it is offline and costs nothing until first used;
- every spec of `QUIVR_EMBEDDERS`, comma-separated: `local`, `openai:MODEL`, `openai:MODEL:DIMS`,
  each openai one optionally `@BASE_URL` (an OpenAI-compatible endpoint; unset: QUIVR_OPENAI_BASE_URL).

An openai spec without DIMS matches `openai:MODEL:<any>`: it is built with those dimensions
requested (text-embedding-3 models shorten their vectors on request). A model that cannot
shorten answers with its own size, which the caller sees as a wrong-sized vector, not as a
quietly wrong search. Matching never calls a provider: a fingerprint is compared with the
specs, and an embedder is built (no network either) only for a match. Each spec is built once
per registry and kept; building is serialised by one lock, so concurrent requests share it.

All openai specs use the deployment's key (QUIVR_OPENAI_API_KEY / OPENAI_API_KEY) and retries.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from urllib.parse import urlsplit, urlunsplit

from quivr_pipelines.core.embedding.base import Embedder
from quivr_pipelines.core.embedding.local import LocalEmbedder

PROVIDERS = ("local", "openai")
SPEC_FORMS = "`local`, `openai:MODEL`, `openai:MODEL:DIMS`, each openai form optionally followed by `@BASE_URL`"


@dataclass(frozen=True)
class EmbedderSpec:
    provider: str  # "local" or "openai"
    model: str
    dimensions: int | None = None
    base_url: str | None = None  # openai only; None: QUIVR_OPENAI_BASE_URL

    def label(self) -> str:
        """The spec written back (`parse_spec(label)` gives it again), a URL's user and password left out."""
        if self.provider == "local":
            return "local"
        text = f"openai:{self.model}" + (f":{self.dimensions}" if self.dimensions else "")
        return text + (f"@{_without_userinfo(self.base_url)}" if self.base_url else "")


LOCAL_SPEC = EmbedderSpec("local", LocalEmbedder.model)


def _without_userinfo(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:  # unparsable: keep only what follows the last `@`
        return url.rpartition("@")[2]
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def parse_spec(spec: str) -> EmbedderSpec:
    """`local` | `openai:MODEL` | `openai:MODEL:DIMS`, openai ones optionally `@BASE_URL`.
    A model name may hold colons (`nomic-embed-text:latest`): only a numeric last part is DIMS."""
    text = spec.strip()
    head, at, base_url = text.partition("@")
    shown = f"{head}@{_without_userinfo(base_url)}" if at else head  # no password in the message
    refused = f"embedder spec {shown!r} is not one of {SPEC_FORMS}"
    if at and not _is_http_url(base_url):
        raise ValueError(f"{refused}: {_without_userinfo(base_url)!r} is not an http(s):// URL")
    if head == "local":
        if at:
            raise ValueError(f"{refused}: the local model takes no base URL")
        return LOCAL_SPEC
    provider, sep, rest = head.partition(":")
    if provider != "openai" or not sep or not rest.strip(":"):
        raise ValueError(refused)
    model, dimensions = rest, None
    name, colon, last = rest.rpartition(":")
    if colon and last.isdigit():
        model, dimensions = name, int(last)
        if dimensions < 1 or not model:
            raise ValueError(refused)
    if not model or model != model.strip() or model.startswith(":") or model.endswith(":"):
        raise ValueError(refused)
    return EmbedderSpec("openai", model, dimensions, base_url or None)


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def parse_specs(text: str) -> list[EmbedderSpec]:
    """QUIVR_EMBEDDERS: comma-separated specs (empty items ignored)."""
    return [parse_spec(item) for item in text.split(",") if item.strip()]


def _parse_fingerprint(fingerprint: str) -> tuple[str, str, int] | None:
    provider, sep, rest = (fingerprint or "").partition(":")
    model, colon, dims = rest.rpartition(":")
    if not sep or not colon or not model or not dims.isdigit():
        return None
    return provider, model, int(dims)


def build_embedder(spec: EmbedderSpec, settings) -> Embedder:
    """The embedder of one spec; no network call (an openai one without DIMS learns them on its first call)."""
    if spec.provider == "local":
        return LocalEmbedder.load()
    if spec.provider != "openai":
        raise ValueError(f"unknown embedding provider {spec.provider!r} (expected one of {', '.join(PROVIDERS)})")
    from quivr_pipelines.core.embedding.openai_embedder import OpenAIEmbedder
    from quivr_pipelines.core.redaction import register

    key = getattr(settings, "openai_api_key", None)
    register(spec.base_url)  # a password in the URL is redacted from logs and errors like a key
    return OpenAIEmbedder(
        model=spec.model,
        dimensions=spec.dimensions,
        api_key=key.get_secret_value() if key else None,
        base_url=spec.base_url or getattr(settings, "openai_base_url", None),
        max_retries=getattr(settings, "openai_max_retries", 6),
    )


def _default_spec(settings, embedder) -> EmbedderSpec:
    """The spec the default embedder answers to (QUIVR_EMBEDDER & co. when built from settings)."""
    if embedder.provider == "local":
        return LOCAL_SPEC
    dimensions = getattr(embedder, "requested_dimensions", None)
    return EmbedderSpec(embedder.provider, embedder.model, dimensions)


def known_fingerprint(embedder) -> str | None:
    """The fingerprint if it costs no network call: an OpenAI embedder without configured
    dimensions learns them from its first call (the service's start-up probe makes it)."""
    from quivr_pipelines.core.embedding.openai_embedder import OpenAIEmbedder

    if isinstance(embedder, OpenAIEmbedder):
        dims = getattr(embedder, "_known_dimensions", None) or embedder.requested_dimensions
        return f"{embedder.provider}:{embedder.model}:{dims}" if dims else None
    return embedder.fingerprint


class EmbedderRegistry:
    """The configured embedders of a process: the default, the local model and QUIVR_EMBEDDERS."""

    def __init__(self, settings, default: Embedder | None = None):
        if default is None:
            from quivr_pipelines.core.factory import build_embedder as build_default

            default = build_default(settings)
        self.settings = settings
        self._default = default
        self._default_key = _default_spec(settings, default)
        listed = parse_specs(getattr(settings, "embedders", "") or "")
        self._specs = list(dict.fromkeys([self._default_key, LOCAL_SPEC, *listed]))
        self._lock = threading.Lock()
        self._built: dict[EmbedderSpec, Embedder] = {self._default_key: default}
        self._by_fingerprint: dict[str, Embedder] = {}

    @property
    def default(self) -> Embedder:
        return self._default

    def configured(self) -> list[str]:
        """Labels of the configured embedders, the default first."""
        return list(dict.fromkeys(spec.label() for spec in self._specs))

    def for_spec(self, spec: EmbedderSpec) -> Embedder:
        """The embedder of a spec, listed or not, built once per registry."""
        with self._lock:
            return self._build(spec)

    def for_fingerprint(self, fingerprint: str) -> Embedder | None:
        """The configured embedder producing `fingerprint`, or None when none does."""
        cached = self._by_fingerprint.get(fingerprint)
        if cached is not None:
            return cached
        parsed = _parse_fingerprint(fingerprint)
        if parsed is None:
            return None
        with self._lock:
            if fingerprint in self._by_fingerprint:
                return self._by_fingerprint[fingerprint]
            found = None
            if known_fingerprint(self._default) == fingerprint:
                found = self._default
            else:
                spec = next(filter(None, (_matching(s, *parsed) for s in self._specs)), None)
                found = self._build(spec) if spec is not None else None
            if found is not None:
                self._by_fingerprint[fingerprint] = found
            return found

    def _build(self, spec: EmbedderSpec) -> Embedder:
        embedder = self._built.get(spec)
        if embedder is None:
            embedder = self._built[spec] = build_embedder(spec, self.settings)
        return embedder


def _matching(spec: EmbedderSpec, provider: str, model: str, dimensions: int) -> EmbedderSpec | None:
    """The spec to build for that fingerprint, or None when `spec` cannot produce it."""
    if spec.provider != provider or spec.model != model or provider not in PROVIDERS:
        return None
    if provider == "local":
        return spec if dimensions == LocalEmbedder.dimensions else None
    if spec.dimensions is None:
        return replace(spec, dimensions=dimensions)
    return spec if spec.dimensions == dimensions else None
