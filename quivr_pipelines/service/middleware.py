"""The outermost ASGI layer: request id, body size limit, in-flight gauge, access log, audit row.

Pure ASGI (not BaseHTTPMiddleware) so streamed answers pass through untouched and the request
is logged and audited when its last byte has been sent.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import UTC, datetime

from fastapi import HTTPException

from quivr_pipelines.core.events import event_logger
from quivr_pipelines.service.writer import AuditRow

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
UNAUDITED = ("/health", "/ready", "/metrics")
STATE_KEY = "quivr"  # scope["state"]["quivr"]: what dependencies learned (key id, kb, action)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {limit} bytes (QUIVR_SERVICE_MAX_BODY_BYTES)")


def action_of(path: str) -> str:
    if path.startswith("/v1/kbs/"):
        tail = path.rstrip("/").rsplit("/", 1)[-1]
        return tail if tail in ("search", "ask") else "other"
    return path.strip("/").split("/", 1)[0] or "root"


def kb_of(path: str) -> str | None:
    parts = path.split("/")
    return parts[3][:128] if len(parts) > 3 and parts[1] == "v1" and parts[2] == "kbs" and parts[3] else None


class RequestContextMiddleware:
    def __init__(self, app, *, max_body_bytes: int, metrics, writer_getter):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.writer_getter = writer_getter  # the writer exists once the lifespan has started
        self.log = event_logger()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        info = {"request_id": request_id, "key_id": None, "kb": kb_of(scope.get("path", ""))}
        scope.setdefault("state", {})[STATE_KEY] = info
        status = {"code": 500}
        limit = self.max_body_bytes

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode())]
            await send(message)

        received = {"bytes": 0}

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                received["bytes"] += len(message.get("body", b""))
                if received["bytes"] > limit:
                    raise BodyTooLarge(limit)
            return message

        self.metrics.active_connections.inc()
        try:
            declared = headers.get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                code = 413 if declared.isdigit() else 400
                detail = BodyTooLarge(limit).detail if code == 413 else "invalid Content-Length header"
                body = json.dumps({"detail": detail}).encode()
                await send_with_id({"type": "http.response.start", "status": code, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")]})
                await send_with_id({"type": "http.response.body", "body": body})
            else:
                await self.app(scope, limited_receive, send_with_id)
        finally:
            self.metrics.active_connections.dec()
            self._finish(scope, info, status["code"], started)

    def _finish(self, scope, info, code: int, started: float) -> None:
        latency = time.perf_counter() - started
        path = scope.get("path", "")
        action = action_of(path)
        if path.startswith("/v1/"):
            self.metrics.queries.labels(action, str(code)).inc()
            self.metrics.query_duration.labels(action).observe(latency)
        self.log.info("request", request_id=info["request_id"], kb_id=info["kb"], key_id=info["key_id"],
                      method=scope.get("method"), path=path, status_code=code,
                      latency_ms=round(latency * 1000, 2))
        writer = self.writer_getter()
        if writer is not None and path not in UNAUDITED:
            client = scope.get("client")
            writer.add(AuditRow(at=datetime.now(UTC), request_id=info["request_id"],
                                api_key_id=info["key_id"], kb=info["kb"], action=action,
                                method=scope.get("method", ""), path=path[:1024], status=code,
                                latency_ms=latency * 1000, client=client[0] if client else None))
