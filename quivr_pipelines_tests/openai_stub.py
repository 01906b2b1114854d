"""A small local server speaking OpenAI's wire format (embeddings and chat completions, plain and
streamed as server-sent events), for the real `openai` client.

Deterministic vectors (hash of the text) and answers (`chat_reply`), real HTTP on a loopback
port, and faults on demand: `rate_limit_next` answers that many requests with 429 +
Retry-After; inputs containing `POISON` get a 400 like an input the provider refuses;
`break_stream_after` cuts a streamed answer after that many tokens (connection dropped);
`fail_next(status, ...)` answers the next requests with an error whose body can echo the key it
was sent (as OpenAI's 401 does), hold a traceback or a DSN with its password, or sleeps first
(a timeout). Every response carries an `x-request-id` (`req_stub_<n>`), as OpenAI's do.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def fake_vector(text: str, dimensions: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimensions)
    return (vector / np.linalg.norm(vector)).tolist()


class OpenAIStub:
    def __init__(self, dimensions: int = 16):
        self.dimensions = dimensions
        self.requests: list[dict] = []
        self.rate_limit_next = 0
        self.chat_reply = "The passages answer this [1]. More detail is in [2]."
        self.break_stream_after: int | None = None
        self.faults: list[dict] = []
        self._ids = itertools.count(1)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                fault = next((f for f in stub.faults if self.path.endswith(f["endpoint"] or "")), None)
                if fault is not None:
                    stub.faults.remove(fault)
                    return self._fault(fault)
                if stub.rate_limit_next > 0:
                    stub.rate_limit_next -= 1
                    return self._send(429, {"error": {"message": "Rate limit reached", "type": "requests",
                                                      "code": "rate_limit_exceeded"}}, {"Retry-After": "0"})
                if self.path.endswith("/chat/completions"):
                    return self._chat(body)
                if not self.path.endswith("/embeddings"):
                    return self._send(404, {"error": {"message": "not found"}})
                inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                if any("POISON" in text for text in inputs):
                    return self._send(400, {"error": {"message": "input rejected", "type": "invalid_request_error"}})
                dims = body.get("dimensions") or stub.dimensions
                data = [{"object": "embedding", "index": i, "embedding": fake_vector(t, dims)}
                        for i, t in enumerate(inputs)]
                tokens = sum(len(t.split()) for t in inputs)
                self._send(200, {"object": "list", "data": data, "model": body["model"],
                                 "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

            def _fault(self, fault):
                if fault.get("delay"):
                    time.sleep(fault["delay"])
                message = fault.get("message", "upstream failure")
                if fault.get("echo_key"):
                    key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                    message = f"Incorrect API key provided: {key}. You can find your API key at ..."
                payload = {"error": {"message": message, "type": fault.get("type", "server_error"),
                                     "code": fault.get("code")}}
                if fault.get("traceback"):
                    payload["traceback"] = fault["traceback"]
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                    self._send(fault["status"], payload, fault.get("headers"))

            def _chat(self, body):
                prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
                words = stub.chat_reply.split(" ")
                pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces),
                         "total_tokens": prompt_tokens + len(pieces)}
                base = {"id": "chatcmpl-stub", "created": 1_790_000_000, "model": body["model"]}
                if not body.get("stream"):
                    return self._send(200, {**base, "object": "chat.completion", "choices": [{
                        "index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": stub.chat_reply}}], "usage": usage})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                chunk = {**base, "object": "chat.completion.chunk"}
                for i, piece in enumerate(pieces):
                    if stub.break_stream_after is not None and i >= stub.break_stream_after:
                        self.wfile.write(b"data: {\"trunc")  # a cut connection mid-event
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    delta = {"content": piece, **({"role": "assistant"} if i == 0 else {})}
                    self._event({**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                self._event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                if (body.get("stream_options") or {}).get("include_usage"):
                    self._event({**chunk, "choices": [], "usage": usage})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _event(self, payload):
                self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                self.wfile.flush()

            def _send(self, status, payload, headers=None):
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("x-request-id", f"req_stub_{next(stub._ids)}")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def fail_next(self, status: int, *, times: int = 1, message: str = "upstream failure",
                  echo_key: bool = False, traceback: str | None = None, delay: float | None = None,
                  headers: dict | None = None, code: str | None = None, type: str = "server_error",
                  endpoint: str | None = None) -> None:
        """Answer the next `times` requests with this error (only those to `endpoint`, e.g.
        "/chat/completions" or "/embeddings", when given)."""
        self.faults.extend({"status": status, "message": message, "echo_key": echo_key,
                            "traceback": traceback, "delay": delay, "headers": headers, "code": code,
                            "type": type, "endpoint": endpoint}
                           for _ in range(times))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
