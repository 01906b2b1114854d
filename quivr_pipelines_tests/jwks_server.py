"""A tiny OIDC issuer for the tests: the discovery document and the JWKS over real HTTP on a
loopback port (Keycloak's paths), signing keys the tests make with `cryptography`, and tokens
signed with them by PyJWT.

Faults on demand: `stop()` closes the port (connection refused), `start()` opens it again on the
same port; `stall_seconds` makes every answer wait that long (a hung issuer). `hits` counts the
requests per path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

REALM = "/realms/quivr"
DISCOVERY = REALM + "/.well-known/openid-configuration"
CERTS = REALM + "/protocol/openid-connect/certs"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    def __init__(self, kind: str = "RSA", kid: str | None = None):
        self.kind = kind
        self.kid = kid or f"{kind.lower()}-{uuid.uuid4().hex[:8]}"
        if kind == "RSA":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS256"
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.alg = "ES256"

    def public_jwk(self) -> dict:
        algorithm = jwt.algorithms.RSAAlgorithm if self.kind == "RSA" else jwt.algorithms.ECAlgorithm
        jwk = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)


class JwksServer:
    def __init__(self):
        self.keys: list[SigningKey] = [SigningKey("RSA"), SigningKey("EC")]
        self.hits: Counter[str] = Counter()
        self.stall_seconds = 0.0
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.base + REALM

    @property
    def jwks_fetches(self) -> int:
        return self.hits[CERTS]

    def start(self) -> JwksServer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                issuer.hits[self.path] += 1
                if issuer.stall_seconds:
                    time.sleep(issuer.stall_seconds)
                if self.path == DISCOVERY:
                    body = {"issuer": issuer.issuer, "jwks_uri": issuer.base + CERTS,
                            "id_token_signing_alg_values_supported": ["RS256", "ES256"]}
                elif self.path == CERTS:
                    body = {"keys": [k.public_jwk() for k in issuer.keys]}
                else:
                    return self._send(404, {"error": "not found"})
                self._send(200, body)

            def _send(self, status: int, body: dict):
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a stalled answer past its timeout)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- tokens ----------------------------------------------------------------------------
    def claims(self, sub: str, audience: str = "quivr-api", lifetime: float = 300, **extra) -> dict:
        now = int(time.time())
        return {"iss": self.issuer, "aud": audience, "sub": sub, "iat": now, "exp": now + int(lifetime),
                **extra}

    def token(self, claims: dict, key: SigningKey | None = None, kid: str | None = None,
              headers: dict | None = None) -> str:
        """Signed with `key` (default: the first published key); `kid` may lie about which."""
        key = key or self.keys[0]
        return jwt.encode(claims, key.private, algorithm=key.alg,
                          headers={"kid": kid if kid is not None else key.kid, **(headers or {})})


def unsigned_token(claims: dict, kid: str) -> str:
    """`alg: none`: no signature at all."""
    header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{header}.{b64url(json.dumps(claims).encode())}."


def hs256_with_public_key(claims: dict, key: SigningKey) -> str:
    """The key-confusion forgery: HMAC-SHA256 keyed with the issuer's public key (PEM), which a
    verifier that trusts the header's `alg` would accept. PyJWT refuses to make it, so by hand."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    signing_input = f"{header}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"
