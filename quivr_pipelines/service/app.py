"""The ASGI application: `create_app()` (uvicorn factory), its lifespan and error mapping."""

from __future__ import annotations

import email.message
import logging
import os
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout

from quivr_pipelines.core.events import event_logger
from quivr_pipelines.core.llm import LLMError
from quivr_pipelines.core.redaction import redact, summary
from quivr_pipelines.core.retrieval import FingerprintMismatch
from quivr_pipelines.core.vectorstore.handoff import StoreBusy
from quivr_pipelines.service.metrics import Metrics
from quivr_pipelines.service.middleware import RequestContextMiddleware
from quivr_pipelines.service.ratelimit import AddressLimiter, AnonymousRateLimitMiddleware
from quivr_pipelines.service.router import router
from quivr_pipelines.service.service import QueryService, UnknownKB, VectorStoreUnavailable

log = logging.getLogger(__name__)


def _json_error(status: int, detail, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=status, headers=headers)


def _is_json(content_type: str) -> bool:
    """FastAPI's own rule: application/json or application/*+json, parameters allowed."""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


async def _validation_error(request: Request, exc: RequestValidationError):
    content_type = request.headers.get("content-type", "")
    if isinstance(exc.body, bytes | bytearray) and exc.body and not _is_json(content_type):
        # FastAPI hands a body it did not parse as JSON to validation as bytes: the problem is
        # the media type, not the fields, so say that instead of "Input should be a valid dict".
        sent = f"Content-Type {content_type[:100]!r}" if content_type else "no Content-Type"
        return _json_error(415, f"the request body must be JSON; {sent} was sent: "
                                "use 'Content-Type: application/json'")
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        where = next(e for e in errors if e.get("type") == "json_invalid")
        return _json_error(400, f"malformed JSON body at position {where['loc'][-1]}: "
                                f"{where.get('ctx', {}).get('error', 'invalid JSON')}")
    cleaned = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors]
    return _json_error(422, cleaned)


def _install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.exception_handler(UnknownKB)
    async def _unknown_kb(request: Request, exc: UnknownKB):
        return _json_error(404, f"unknown knowledge base {exc.args[0]!r}")

    @app.exception_handler(FingerprintMismatch)
    async def _mismatch(request: Request, exc: FingerprintMismatch):
        return _json_error(409, redact(str(exc)))

    @app.exception_handler(LLMError)
    async def _llm(request: Request, exc: LLMError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return _json_error(exc.status_code, redact(str(exc)), headers)  # fixed text (core.llm); redact: belt and braces

    @app.exception_handler(VectorStoreUnavailable)
    async def _store(request: Request, exc: VectorStoreUnavailable):
        # The client gets the error type only; the operator the first line of the store's message
        # (a Qdrant error's body follows on later lines), redacted.
        event_logger().warning("vector_store_error", error=summary(exc.__cause__ or exc))
        return _json_error(503, redact(str(exc)), {"Retry-After": "5"})

    @app.exception_handler(psycopg.Error)
    async def _database(request: Request, exc: psycopg.Error):
        log.warning("catalog database error: %s", summary(exc))
        return _json_error(503, f"catalog database unavailable: {type(exc).__name__}", {"Retry-After": "5"})

    @app.exception_handler(PoolTimeout)
    async def _pool(request: Request, exc: PoolTimeout):
        return _json_error(503, "catalog database unavailable: no connection within the pool timeout",
                           {"Retry-After": "5"})

    @app.exception_handler(StoreBusy)
    async def _busy(request: Request, exc: StoreBusy):
        return _json_error(503, redact(f"vector store busy: {exc}"), {"Retry-After": "5"})


def create_app(settings=None) -> FastAPI:
    """`settings` defaults to the environment (read here, at app creation, never at import)."""
    if settings is None:
        from quivr_pipelines.settings import get_settings

        settings = get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Nothing here may fail on a dependency that is down: the service then starts, /ready
        # says which one is missing, keyed requests get 503 + Retry-After, and a background
        # thread brings the dependency up when it returns (QueryService.start).
        service = QueryService.from_settings(settings, metrics)
        service.start(wait_seconds=10)
        app.state.service = service
        event_logger().info("service_started", llm_model=settings.llm_model or None,
                            extractive=service.llm is None, embedder=service.embedder.provider,
                            embedders=service.registry.configured(),
                            vector_store="server" if settings.qdrant_url else "embedded",
                            not_ready=service.not_started() or None)
        try:
            yield
        finally:
            app.state.service = None
            service.close()
            if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # drop this worker from the live gauge
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(os.getpid())
            event_logger().info("service_stopped", audit_rows_written=service.writer.written)

    # redirect_slashes=False: Starlette's trailing-slash redirect builds its Location from the
    # Host header (a reflected, attacker-chosen host); `/v1/kbs/x/search/` is a plain 404 instead.
    app = FastAPI(title="quivr-pipelines query service", version="1", lifespan=lifespan,
                  redirect_slashes=False)
    app.state.metrics = metrics
    app.state.service = None
    app.include_router(router)
    _install_error_handlers(app)
    # Added first, so it runs inside CORS (browsers can read its 429) and the request context.
    app.add_middleware(AnonymousRateLimitMiddleware, limiter=AddressLimiter(
        settings.anon_rate_limit_per_minute, settings.anon_rate_limit_burst, settings.anon_rate_limit_clients))
    origins = [o.strip() for o in settings.service_cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After"], max_age=600)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.service_max_body_bytes,
                       metrics=metrics, writer_getter=lambda: _writer(app))
    return app


def _writer(app: FastAPI):
    service = getattr(app.state, "service", None)
    return service.writer if service is not None else None
