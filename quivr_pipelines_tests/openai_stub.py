"""A small local server speaking OpenAI's wire format (embeddings and chat completions, plain and
streamed as server-sent events), for the real `openai` client.

Deterministic vectors (hash of the text) and answers (`chat_reply`), real HTTP on a loopback
port, and faults on demand: `rate_limit_next` answers that many requests with 429 +
Retry-After; inputs containing `POISON` get a 400 like an input the provider refuses;
`break_stream_after` cuts a streamed answer after that many tokens (connection dropped).
"""

from __future__ import annotations

import hashlib
import json
import threading
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
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
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
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
