"""OAuth2 users: JWT bearer tokens of an OIDC issuer (a real JWKS server on loopback, keys made
here), over real HTTP against the real service stack (conftest: KBs alpha and beta ingested).

The JWKS cache's cooldown is crossed by moving the cache's clock (as the API-key test moves time
inside PostgreSQL), never by sleeping.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from pydantic import ValidationError

from quivr_pipelines.service import oidc
from quivr_pipelines_tests.jwks_server import JwksServer, SigningKey, hs256_with_public_key, unsigned_token
from quivr_pipelines_tests.service.conftest import ServerThread, auth

AUDIENCE = "quivr-api"


def oidc_settings(settings, issuer: JwksServer, **extra):
    """A Keycloak-style mapping: roles in realm_access.roles, KBs as groups named /kb/<kb>."""
    return settings.model_copy(update={
        "oidc_issuer": issuer.issuer, "oidc_audience": AUDIENCE, "oidc_role_claim": "realm_access.roles",
        "oidc_role_map": "quivr-admin=admin,quivr-editor=editor,quivr-viewer=viewer",
        "oidc_kbs_claim": "groups", "oidc_kbs_prefix": "/kb/", "oidc_jwks_timeout_seconds": 1.0,
        "rate_limit_per_minute": 1.0, "rate_limit_burst": 3,
        "anon_rate_limit_per_minute": 0,  # these tests send far more 401s than one address may
        **extra})


@pytest.fixture(scope="module")
def issuer():
    server = JwksServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def oidc_app(stack, issuer):
    from quivr_pipelines.service.app import create_app

    server = ServerThread(create_app(oidc_settings(stack["settings"], issuer))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def oidc_client(oidc_app):
    with httpx.Client(base_url=oidc_app.url, timeout=30) as c:
        yield c


def user_claims(issuer: JwksServer, kbs=("alpha",), roles=("quivr-viewer",), sub=None, **extra) -> dict:
    return issuer.claims(sub or f"user-{uuid.uuid4().hex[:8]}", AUDIENCE, groups=[f"/kb/{kb}" for kb in kbs],
                         realm_access={"roles": list(roles)}, **extra)


def db_rows(stack, sql: str, params=()) -> list[tuple]:
    settings = stack["settings"]
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        conn.execute(f'SET search_path TO "{settings.database_schema}"')
        return conn.execute(sql, params).fetchall()


def advance(app: ServerThread, seconds: float) -> None:
    jwks = app.app.state.oidc.jwks
    before = jwks.clock
    jwks.clock = lambda: before() + seconds


def search(client, token: str, kb: str = "alpha", query: str = "oxygen", mode: str = "sparse"):
    return client.post(f"/v1/kbs/{kb}/search", headers=auth(token), json={"query": query, "mode": mode})


# -- authorization ---------------------------------------------------------------------------
def test_a_user_reads_the_kbs_of_its_claims_only_and_is_audited_as_oidc_sub(oidc_client, oidc_app, issuer,
                                                                            stack):
    claims = user_claims(issuer, sub="alice")
    rsa_token = issuer.token(claims)
    ec_token = issuer.token(claims, key=issuer.keys[1])
    ok = search(oidc_client, rsa_token, query=f"oxygen for alice {uuid.uuid4().hex}", mode="hybrid")
    denied, ec = search(oidc_client, rsa_token, "beta"), search(oidc_client, ec_token)
    assert ok.status_code == 200 and ok.json()["results"], ok.text
    assert denied.status_code == 403
    assert denied.json()["detail"] == "OIDC user oidc:alice has no access to knowledge base 'beta'"
    assert ec.status_code == 200, ec.text
    every_kb = issuer.token(user_claims(issuer, kbs=("*",), roles=("quivr-admin",)))
    assert search(oidc_client, every_kb, "beta").status_code == 200

    no_role = issuer.token(user_claims(issuer, sub="bob", roles=("some-other-app",)))
    refused = search(oidc_client, no_role)
    assert refused.status_code == 403 and "oidc:bob maps to no role" in refused.json()["detail"]

    assert oidc_app.service.writer.flush()
    ids = [r.headers["x-request-id"] for r in (ok, denied, refused)]
    rows = dict(db_rows(stack, "SELECT request_id, api_key_id || ' ' || status FROM audit_log"
                               " WHERE request_id = ANY(%s)", (ids,)))
    assert [rows[i] for i in ids] == ["oidc:alice 200", "oidc:alice 403", "oidc:bob 403"]
    usage = db_rows(stack, "SELECT kind FROM usage_ledger WHERE api_key_id = 'oidc:alice'")
    assert ("query_embedding",) in usage  # the query embedding is charged to the user
    everything = str(db_rows(stack, "SELECT * FROM audit_log"))
    assert rsa_token not in everything and rsa_token.split(".")[2] not in everything


def test_api_keys_keep_working_next_to_oidc(oidc_client, stack):
    assert search(oidc_client, stack["keys"]["admin"]).status_code == 200
    bad = search(oidc_client, "qvr_not-a-real-key")
    assert bad.status_code == 401 and bad.json()["detail"] == "invalid API key"


def test_without_oidc_settings_a_jwt_is_an_invalid_api_key(client, issuer):
    response = search(client, issuer.token(user_claims(issuer)))
    assert response.status_code == 401 and response.json()["detail"] == "invalid API key"


def test_jwt_users_are_rate_limited_per_subject(oidc_client, issuer):
    token = issuer.token(user_claims(issuer, sub="carol"))
    codes = [search(oidc_client, token) for _ in range(4)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429]  # burst 3, 1 per minute
    assert 1 <= int(codes[-1].headers["retry-after"]) <= 60
    assert "oidc:carol" in codes[-1].json()["detail"]
    assert search(oidc_client, issuer.token(user_claims(issuer, sub="dave"))).status_code == 200


# -- rejections ------------------------------------------------------------------------------
def test_every_bad_token_gets_a_precise_401(oidc_client, issuer):
    now = int(time.time())
    published = issuer.keys[0]
    impostor = SigningKey("RSA", kid=published.kid)  # same kid, another key: a forged signature
    base = user_claims(issuer)
    no_sub = {k: v for k, v in base.items() if k != "sub"}
    no_exp = {k: v for k, v in base.items() if k != "exp"}
    cases = {
        "expired": (issuer.token({**base, "exp": now - 120}), "token expired (exp)"),
        "not yet valid": (issuer.token({**base, "nbf": now + 300}), "token not yet valid (nbf)"),
        "issued in the future": (issuer.token({**base, "iat": now + 300}), "token not yet valid (iat)"),
        "wrong issuer": (issuer.token({**base, "iss": "https://evil.example.com/realms/quivr"}),
                         "token issuer (iss) is not QUIVR_OIDC_ISSUER"),
        "wrong audience": (issuer.token({**base, "aud": "another-app"}),
                           "token audience (aud) does not include QUIVR_OIDC_AUDIENCE"),
        "wrong signature": (issuer.token(base, key=impostor),
                            "token signature does not verify with the issuer's key"),
        "alg none": (unsigned_token(base, published.kid),
                     "token algorithm 'none' is not allowed (QUIVR_OIDC_ALGORITHMS: RS256, ES256)"),
        "HS256 with the public key": (hs256_with_public_key(base, published),
                                      "token algorithm 'HS256' is not allowed (QUIVR_OIDC_ALGORITHMS: RS256, ES256)"),
        "EC signature on the RSA kid": (issuer.token(base, key=issuer.keys[1], kid=published.kid),
                                        f"signing key {published.kid!r} is for 'RS256', the token says 'ES256'"),
        "malformed": ("eyJhbGciOi.not-json.c2ln", "malformed token: not a JWS compact serialization"),
        "no sub": (issuer.token(no_sub), "token has no 'sub' claim"),
        "no exp": (issuer.token(no_exp), "token has no 'exp' claim"),
    }
    search(oidc_client, issuer.token(base))  # the keys are cached from here on
    fetches = issuer.jwks_fetches
    for case, (token, detail) in cases.items():
        response = search(oidc_client, token)
        assert response.status_code == 401, (case, response.text)
        assert response.json()["detail"] == f"invalid bearer token: {detail}", case
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="quivr", error="invalid_token", error_description="'), case
    assert issuer.jwks_fetches == fetches  # none of them cost the issuer a request
    within_leeway = issuer.token({**base, "exp": now - 10})  # QUIVR_OIDC_LEEWAY_SECONDS: 30
    assert search(oidc_client, within_leeway).status_code == 200


def test_unknown_kid_refetches_once_per_cooldown_and_a_rotated_key_then_works(oidc_client, oidc_app, issuer):
    assert search(oidc_client, issuer.token(user_claims(issuer))).status_code == 200
    fetches = issuer.jwks_fetches
    random_kid = issuer.token(user_claims(issuer), kid="kid-nobody-published")
    response = search(oidc_client, random_kid)  # within the cooldown of the last fetch: no fetch
    assert response.status_code == 401
    assert response.json()["detail"] == "invalid bearer token: signing key 'kid-nobody-published' is not in the issuer's JWKS"
    assert issuer.jwks_fetches == fetches

    advance(oidc_app, 31)  # past QUIVR_OIDC_JWKS_MIN_REFRESH_SECONDS (30)
    flood = [search(oidc_client, issuer.token(user_claims(issuer), kid=uuid.uuid4().hex)) for _ in range(25)]
    assert {r.status_code for r in flood} == {401}
    assert issuer.jwks_fetches == fetches + 1  # 25 random kids, one refetch

    rotated = SigningKey("RSA")
    issuer.keys = [rotated, issuer.keys[1]]  # the issuer rotates its RSA key
    new_token = issuer.token(user_claims(issuer), key=rotated)
    assert search(oidc_client, new_token).status_code == 401  # still within the cooldown
    advance(oidc_app, 31)
    assert search(oidc_client, new_token).status_code == 200
    assert issuer.jwks_fetches == fetches + 2


def test_issuer_unreachable_is_503_with_retry_after_and_recovers(stack):
    """A fresh app (no key cached): issuer refused, then hung, then back; then down again with
    keys cached past their TTL (they keep serving), and an unknown kid while it is down."""
    from quivr_pipelines.service.app import create_app

    issuer = JwksServer()
    token = issuer.token(user_claims(issuer))
    issuer.stop()
    app = ServerThread(create_app(oidc_settings(stack["settings"], issuer))).start()
    try:
        with httpx.Client(base_url=app.url, timeout=30) as client:
            first, second = search(client, token), search(client, token)
            for response in (first, second):
                assert response.status_code == 503, response.text
                assert response.json()["detail"].startswith("OIDC issuer unreachable (ConnectError from http://127.0.0.1:")
                assert response.json()["detail"].endswith("); no signing keys cached")
                assert 1 <= int(response.headers["retry-after"]) <= 30
            jwks = app.app.state.oidc.jwks
            assert jwks.fetches == 1  # the second request was answered from the remembered failure

            issuer.stall_seconds = 3  # up again but hung: the 1 s timeout bounds the wait
            issuer.start()
            advance(app, 31)
            hung = search(client, token)
            assert hung.status_code == 503 and "ReadTimeout" in hung.json()["detail"], hung.text
            assert jwks.fetches == 2

            issuer.stall_seconds = 0
            advance(app, 31)
            assert search(client, token).status_code == 200
            assert issuer.hits["/realms/quivr/.well-known/openid-configuration"] >= 1  # discovered

            # Past QUIVR_OIDC_JWKS_TTL_SECONDS with the issuer hung: one request refreshes (and
            # times out), the others do not wait for it; the cached keys keep verifying.
            issuer.stall_seconds = 3
            advance(app, 601)
            with ThreadPoolExecutor(4) as pool:
                codes = list(pool.map(lambda _: search(client, issuer.token(user_claims(issuer))).status_code,
                                      range(4)))
            assert codes == [200] * 4 and jwks.fetches == 4
            unknown = search(client, issuer.token(user_claims(issuer), kid="rotated-while-down"))
            assert unknown.status_code == 503 and "signing key 'rotated-while-down' not cached" in unknown.text

            issuer.stop()  # refused now, cooldown over: still served from the cached keys
            advance(app, 31)
            assert search(client, issuer.token(user_claims(issuer))).status_code == 200
            assert jwks.fetches == 5
    finally:
        app.stop()
        issuer.stop()


# -- the parts, without a server ---------------------------------------------------------------
@pytest.mark.parametrize(("raw", "jwt_like"), [
    ("qvr_" + "A" * 43, False), ("qvr_a.b.c", False), ("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", True),
    ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", True), ("a.b", False), ("aa.bb.cc.dd", False), ("aa.b+b.cc", False),
])
def test_a_jwt_is_told_from_an_api_key_by_shape_and_prefix(raw, jwt_like):
    assert oidc.looks_like_jwt(raw) is jwt_like


def test_claims_by_dotted_path_or_namespaced_name_and_the_role_map():
    payload = {"realm_access": {"roles": ["quivr-editor", "offline"]}, "https://quivr.example.com/roles": ["a"],
               "scope": "openid quivr-viewer"}
    assert oidc.claim(payload, "realm_access.roles") == ["quivr-editor", "offline"]
    assert oidc.claim(payload, "https://quivr.example.com/roles") == ["a"]
    assert oidc.claim(payload, "resource_access.quivr.roles") is None
    assert oidc.claim_values(oidc.claim(payload, "scope")) == ["openid", "quivr-viewer"]
    rules = (("quivr-admin", "admin"), ("quivr-editor", "editor"), ("*", "viewer"))
    assert oidc.role_for(["offline", "quivr-editor"], rules) == "editor"
    assert oidc.role_for(["quivr-editor", "quivr-admin"], rules) == "admin"  # the highest wins
    assert oidc.role_for([], rules) == "viewer"  # `*`: every valid token
    assert oidc.role_for(["x"], rules[:2]) is None


@pytest.mark.parametrize(("env", "message"), [
    ({"QUIVR_OIDC_ALGORITHMS": "RS256,none"}, "none refused"),
    ({"QUIVR_OIDC_ALGORITHMS": "HS256"}, "HS256 refused"),
    ({"QUIVR_OIDC_ROLE_MAP": "quivr-admin=root"}, "not `claim-value=role`"),
    ({"QUIVR_OIDC_ISSUER": "https://id.example.com/realms/q"}, "needs QUIVR_OIDC_AUDIENCE"),
    ({"QUIVR_OIDC_ISSUER": "http://id.example.com/realms/q", "QUIVR_OIDC_AUDIENCE": "a"}, "not an https:// URL"),
])
def test_unsafe_oidc_settings_are_refused_at_start(monkeypatch, env, message):
    from quivr_pipelines.settings import Settings

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_subject_buckets_refill_and_stay_bounded():
    now = [0.0]
    buckets = oidc.SubjectBuckets(per_minute=60, burst=2, max_subjects=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 1]
    now[0] += 1.0
    assert buckets.take("a") == 0
    for subject in "bcde":
        buckets.take(subject)
    assert len(buckets._buckets) == 3
