"""A re-embedding seen from a client: the query service answers over real HTTP while a KB's
model changes under it (local -> the OpenAI-compatible stub, back to local through the gates,
then a rollback), and never fails a query. Each answer names the model and generation that
answered; they change only while a swap or a rollback runs, never elsewhere.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

import httpx
import pytest

from quivr_pipelines_tests.openai_stub import OpenAIStub
from quivr_pipelines_tests.service.conftest import ServerThread, auth, ingest, passages

LOCAL = "local:all-MiniLM-L6-v2:384"
STUB = "openai:stub-embed:16"
QUERIES = ["How many points did the Panthers defense give up?", "Which forest covers most of the Amazon basin?",
           "What is oxygen's atomic number?", "Who won Super Bowl 50?", "How is the rainforest threatened?"]


@dataclass
class Answer:
    started: float
    ended: float
    status: int
    model: str | None
    generation: int | None


class Client(threading.Thread):
    """Searches without pause until stopped, recording every answer with its times."""

    def __init__(self, url: str, key: str):
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.answers: list[Answer] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60, headers=auth(self.key)) as http:
            for n in itertools.count():
                if self.stopping.is_set():
                    return
                # a distinct query each time: the result cache would otherwise answer most of them
                query = {"query": f"{QUERIES[n % len(QUERIES)]} ({n})", "top_k": 3}
                started = time.monotonic()
                try:
                    response = http.post("/v1/kbs/alpha/search", json=query)
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                body = response.json() if response.status_code == 200 else {}
                self.answers.append(Answer(started, time.monotonic(), response.status_code,
                                           body.get("model"), body.get("generation")))
                if response.status_code != 200:
                    self.errors.append(f"{response.status_code}: {response.text[:200]}")

    def count_after(self, moment: float) -> int:
        return sum(1 for a in self.answers if a.started > moment)


def documents(texts: dict[str, str], n: int = 10) -> dict[str, str]:
    """object key -> passage id: the first passage of `n` XQuAD articles (enough for the golden set)."""
    found: dict[str, str] = {}
    for passage_id in texts:
        title = passage_id.rsplit("__", 1)[0]
        found.setdefault(f"articles/{title.lower()}.txt", passage_id)
        if len(found) == n:
            break
    return found


@pytest.fixture(scope="module")
def served(env):
    from quivr_pipelines.core.catalog import api_keys
    from quivr_pipelines.core.factory import open_database
    from quivr_pipelines.service.app import create_app
    from quivr_pipelines.settings import get_settings

    with OpenAIStub(dimensions=16) as stub, pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUIVR_EMBEDDERS", f"openai:stub-embed:16@{stub.url}")
        mp.setenv("QUIVR_OPENAI_API_KEY", "sk-test-reembed-swap")
        mp.setenv("QUIVR_REEMBED_PAGE_SIZE", "4")  # several rounds, so queries meet a build in progress
        settings = get_settings()
        texts = passages()
        ingest(settings, "alpha", documents(texts), texts)
        db = open_database(settings)
        try:
            key = api_keys.create_key(db, "swap watcher", "viewer", ["alpha"])[1]
        finally:
            db.close()
        server = ServerThread(create_app(settings)).start()
        try:
            yield {"settings": settings, "url": server.url, "key": key, "stub": stub}
        finally:
            server.stop()


def reembed_context(settings):
    from quivr_pipelines.core import reembed
    from quivr_pipelines.core.embedding.registry import EmbedderRegistry
    from quivr_pipelines.core.factory import build_object_store, build_vector_store, kb_defaults, open_database

    db, store = open_database(settings), build_vector_store(settings)
    ctx = reembed.ReembedContext(vectors=store, db=db, registry=EmbedderRegistry(settings),
                                 defaults=kb_defaults(settings), objects=build_object_store(settings),
                                 page_size=settings.reembed_page_size, actor="test")
    return ctx, lambda: (store.close(), db.close())


def wait_for_answers(client: Client, after: float, count: int = 5) -> None:
    deadline = time.monotonic() + 120
    while client.count_after(after) < count:
        assert time.monotonic() < deadline, f"no answers after {after}: {client.errors[-3:]}"
        assert client.is_alive()
        time.sleep(0.05)


def test_queries_never_fail_while_the_model_changes_and_changes_only_at_the_swap(served):
    from quivr_pipelines.core import reembed

    stub = served["stub"]
    ctx, close = reembed_context(served["settings"])
    client = Client(served["url"], served["key"])
    windows: list[tuple[float, float, tuple[str, int], tuple[str, int]]] = []  # (start, end, before, after)
    try:
        client.start()
        wait_for_answers(client, 0)
        stub_spec = f"openai:stub-embed:16@{stub.url}"
        # 1. local -> stub. The stub's vectors are noise (a hash of the text), so the quality gate
        #    would rightly refuse it; this direction is forced, to have another model to come back from.
        gen = reembed.start_or_resume(ctx, "alpha", reembed.Target(embedder=stub_spec))
        reembed.build(ctx, gen)
        wait_for_answers(client, time.monotonic())  # answered while the stub generation stood built
        started = time.monotonic()
        first = reembed.swap(ctx, "alpha", require_gates=False)
        windows.append((started, time.monotonic(), (LOCAL, first.previous.generation),
                        (first.serving.fingerprint, first.serving.generation)))
        wait_for_answers(client, time.monotonic())

        # 2. stub -> local, through the gates: the real model retrieves better than noise.
        gen = reembed.start_or_resume(ctx, "alpha", reembed.Target(embedder="local"))
        reembed.build(ctx, gen)
        results = reembed.run_gates(ctx, gen)
        assert all(r.passed for r in results), [(r.name, r.description) for r in results if not r.passed]
        started = time.monotonic()
        second = reembed.swap(ctx, "alpha")
        windows.append((started, time.monotonic(), windows[-1][3],
                        (second.serving.fingerprint, second.serving.generation)))
        wait_for_answers(client, time.monotonic())

        # 3. rollback to the stub generation.
        started = time.monotonic()
        back = reembed.rollback(ctx, "alpha")
        windows.append((started, time.monotonic(), windows[-1][3],
                        (back.serving.fingerprint, back.serving.generation)))
        wait_for_answers(client, time.monotonic())
    finally:
        client.stopping.set()
        client.join(120)
        close()

    assert not client.errors, client.errors[:5]
    assert all(a.status == 200 for a in client.answers)
    served_models = [w[2] for w in windows] + [windows[-1][3]]
    assert [m for m, _ in served_models] == [LOCAL, STUB, LOCAL, STUB]
    assert len({g for _, g in served_models}) == 3  # generations 1, 2 and 3; the rollback returns to 2
    # Every answer came from the generation serving in its phase; one that overlapped a swap from
    # the one before or the one after it, nothing else.
    for answer in client.answers:
        seen = (answer.model, answer.generation)
        phase = sum(1 for start, _, _, _ in windows if answer.ended > start)  # windows begun before it ended
        inside = [w for w in windows if answer.started < w[1] and answer.ended > w[0]]
        if inside:
            allowed = {inside[0][2]} | {w[3] for w in inside}
            assert seen in allowed, (answer, inside)
        else:
            assert seen == served_models[phase], (answer, phase)
    for n in range(len(served_models)):  # each phase was queried, not just the ends
        assert sum(1 for a in client.answers if (a.model, a.generation) == served_models[n]) >= 5
