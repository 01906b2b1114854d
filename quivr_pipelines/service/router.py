"""HTTP routes. Plain `def` routes: retrieval and the LLM client are blocking, FastAPI runs them
in its threadpool (the store serialises its own access; the embedder is thread-safe)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from quivr_pipelines.core.catalog.api_keys import ApiKey
from quivr_pipelines.service.dependencies import get_service, kb_reader
from quivr_pipelines.service.schemas import (
    MAX_TOP_K,
    MAX_TOP_K_EVALUATION,
    AskRequest,
    AskResponse,
    ErrorResponse,
    SearchRequest,
    SearchResponse,
)
from quivr_pipelines.service.service import QueryService

ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 415, 422, 429, 502, 503, 504)}
router = APIRouter()


def _check_length(service: QueryService, query: str) -> None:
    limit = service.settings.max_query_length
    if len(query) > limit:
        raise HTTPException(422, f"query is {len(query)} characters long; the limit is {limit} (MAX_QUERY_LENGTH)")


def _check_top_k(key: ApiKey, top_k: int) -> None:
    """Above 50 (the schema's cap is 100, for every key: 422) only for evaluation keys: 403."""
    if top_k > MAX_TOP_K and not key.evaluation:
        raise HTTPException(403, f"top_k {top_k} is above {MAX_TOP_K}, the limit for keys without the "
                                 f"evaluation capability; {key.id} may ask for at most {MAX_TOP_K} "
                                 f"(an evaluation key, `quivr-pipelines keys create --evaluation`, up to "
                                 f"{MAX_TOP_K_EVALUATION})")


@router.post("/v1/kbs/{kb}/search", response_model=SearchResponse, responses=ERRORS)
def search(kb: str, body: SearchRequest, key: ApiKey = Depends(kb_reader),
           service: QueryService = Depends(get_service)):
    _check_length(service, body.query)
    _check_top_k(key, body.top_k)
    return service.search(kb, body, key.id)


@router.post("/v1/kbs/{kb}/ask", response_model=AskResponse, responses=ERRORS)
def ask(kb: str, body: AskRequest, key: ApiKey = Depends(kb_reader),
        service: QueryService = Depends(get_service)):
    _check_length(service, body.query)
    _check_top_k(key, body.top_k)
    if body.stream:
        events = service.ask_stream(kb, body, key.id)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return service.ask(kb, body, key.id)


@router.get("/health")
async def health():
    """On the event loop, not in the threadpool: liveness must not queue behind slow searches
    (a sync route waited ~27 s for a thread with 45 searches in flight)."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request):
    """The checks block (database round trip, store call), so they run on a small executor of
    the service's own, not in the request threadpool that searches can fill (nor does the
    service come from a sync dependency: FastAPI would run that in the threadpool too)."""
    service: QueryService = request.app.state.service
    checks = await service.run_probe(service.check_ready)
    ok = all(value == "ok" for value in checks.values())
    return JSONResponse({"status": "ready" if ok else "unavailable", "checks": checks},
                        status_code=200 if ok else 503)


@router.get("/metrics")
def metrics(request: Request):
    payload, content_type = request.app.state.metrics.render()
    return Response(payload, media_type=content_type)
