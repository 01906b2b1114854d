"""A small local server speaking OpenAI's embeddings wire format, for the real `openai` client.

Deterministic vectors (hash of the text), real HTTP on a loopback port, and faults on demand:
`rate_limit_next` answers that many requests with 429 + Retry-After; inputs containing
`POISON` get a 400 like an input the provider refuses.
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
