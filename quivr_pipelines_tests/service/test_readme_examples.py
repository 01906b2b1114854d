"""The README's curl examples, as written: every `curl` command of its fenced blocks is run by
the real curl binary against the query service served over HTTP, with only the API key ($KEY,
from the environment as a shell would), an OIDC access token ($ACCESS_TOKEN, signed by a loopback
issuer configured as the README's Keycloak example) and the address (localhost:8000)
substituted."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from quivr_pipelines_tests.jwks_server import JwksServer
from quivr_pipelines_tests.service.conftest import ServerThread, ingest

README = Path(__file__).resolve().parents[2] / "README.md"
ADDRESS = re.compile(r"(?:https?://)?(?:localhost|127\.0\.0\.1):8000")
STATUS_MARK = "\n@@status="
HANDBOOK = {  # object key -> text
    "hr/parental-leave.txt": (
        "Parental leave. Every employee who becomes a parent, by birth or by adoption, is entitled "
        "to 16 weeks of paid parental leave. The leave can be taken in one block or in several "
        "parts during the first year after the birth or the adoption. Tell your manager and the HR "
        "team at least four weeks before the leave starts."
    ),
    "hr/holidays.txt": (
        "Holidays. Full-time employees get 25 days of paid holiday per calendar year, plus public "
        "holidays. Up to five unused days can be carried over to the next year."
    ),
    "it/laptops.txt": (
        "Laptops. Every new employee receives a laptop on the first day. Parental controls and leave "
        "requests are not handled by IT: report a lost or broken laptop to the IT help desk."
    ),
}


def readme_curl_commands(text: str) -> list[str]:
    """The `curl` commands of the fenced code blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.M | re.S):
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            if command.strip().startswith("curl "):
                commands.append(command.strip())
    return commands


def sse_events(text: str) -> list[tuple[str, object]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields["event"], json.loads(fields["data"])))
    return events


@pytest.fixture(scope="module")
def handbook(env, tmp_path_factory):
    """KB `handbook` (the README's), a key for it, the service on a loopback port, and a curl
    configuration that only appends the HTTP status to the output (and keeps ~/.curlrc out)."""
    from quivr_pipelines.core.catalog import api_keys
    from quivr_pipelines.core.factory import open_database
    from quivr_pipelines.service.app import create_app
    from quivr_pipelines.settings import get_settings

    settings = get_settings()
    ingest(settings, "handbook", {key: key for key in HANDBOOK}, HANDBOOK)
    db = open_database(settings)
    try:
        key = api_keys.create_key(db, "support bot", "viewer", ["handbook"])[1]
    finally:
        db.close()
    curl_home = tmp_path_factory.mktemp("curl")
    (curl_home / ".curlrc").write_text('write-out = "' + STATUS_MARK.replace("\n", "\\n") + '%{http_code}"\n')
    issuer = JwksServer()
    keycloak = {"oidc_issuer": issuer.issuer, "oidc_audience": "quivr-api", "oidc_role_claim": "realm_access.roles",
                "oidc_role_map": "quivr-admin=admin,quivr-editor=editor,*=viewer", "oidc_kbs_claim": "groups",
                "oidc_kbs_prefix": "/kb/"}
    token = issuer.token(issuer.claims("alice", "quivr-api", lifetime=3600, groups=["/kb/handbook"],
                                       realm_access={"roles": ["employee"]}))
    server = ServerThread(create_app(settings.model_copy(update=keycloak))).start()
    environment = {name: value for name, value in os.environ.items() if "proxy" not in name.lower()}
    environment.update({"KEY": key, "ACCESS_TOKEN": token, "CURL_HOME": str(curl_home)})
    yield {"url": server.url, "env": environment}
    server.stop()
    issuer.stop()


def run_curl(handbook, command: str) -> tuple[int, str]:
    command = ADDRESS.sub(handbook["url"], command)
    done = subprocess.run(["bash", "-c", command], env=handbook["env"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, (command, done.stderr)
    body, _, status = done.stdout.rpartition(STATUS_MARK)
    return int(status), body


def test_the_readme_curl_examples_run_as_written(handbook):
    commands = readme_curl_commands(README.read_text())
    assert len(commands) >= 2, commands
    seen = set()
    for command in commands:
        assert ADDRESS.search(command), f"an example without the README's address: {command}"
        status, body = run_curl(handbook, command)
        assert 200 <= status < 300, (command, status, body)
        path = re.search(r":8000(/\S*)", command).group(1)
        if path.endswith("/search"):
            answer = json.loads(body)
            assert answer["kb"] == "handbook" and answer["results"], answer
            assert answer["results"][0]["document_key"] == "hr/parental-leave.txt"
            assert "16 weeks" in answer["results"][0]["text"]
            if "document_key_prefix" in command:
                assert all(r["document_key"].startswith("hr/") for r in answer["results"]), answer
        elif path.endswith("/ask") and '"stream": true' in command:
            events = sse_events(body)
            names = [name for name, _ in events]
            assert names[0] == "citations" and names[-1] == "done" and "token" in names, names
            assert events[0][1][0]["document_key"] == "hr/parental-leave.txt"
            assert "16 weeks" in "".join(data["text"] for name, data in events if name == "token")
            path += " (stream)"
        elif path.endswith("/ask"):
            answer = json.loads(body)
            assert "16 weeks" in answer["answer"] and answer["extractive"] is True, answer
            assert answer["citations"][0]["document_key"] == "hr/parental-leave.txt"
        elif path == "/health":
            assert json.loads(body) == {"status": "ok"}
        else:
            pytest.fail(f"no check for the README example {command}")
        seen.add(path)
    assert {"/v1/kbs/handbook/search", "/v1/kbs/handbook/ask (stream)"} <= seen, seen


def test_the_readme_examples_would_fail_without_a_json_content_type(handbook):
    """What the examples looked like before: curl -d sends a form content type: 415, naming the fix."""
    command = ("curl -s localhost:8000/v1/kbs/handbook/search -H \"Authorization: Bearer $KEY\" "
               "-d '{\"query\": \"parental leave\"}'")
    status, body = run_curl(handbook, command)
    assert status == 415 and "application/json" in json.loads(body)["detail"], body


def test_the_readme_configuration_table_matches_the_settings():
    """Every variable `Settings` reads (QUIVR_ + field name, or its aliases) has a row, every
    QUIVR_ row is a setting, and a default written as `code` is the field's default."""
    from pydantic import AliasChoices

    from quivr_pipelines.settings import Settings

    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, str] = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            name_cell, default_cell = [cell.strip() for cell in line.strip("|").split("|")[:2]]
            for name in re.findall(r"`([A-Z0-9_]+)`", name_cell):
                documented[name] = default_cell

    def shown(value) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    read = {}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names = alias.choices if isinstance(alias, AliasChoices) else [f"QUIVR_{field_name}"]
        for name in names:
            read[name.upper()] = field
    assert sorted(set(read) - set(documented)) == [], "settings missing from the README's table"
    stale = [name for name in documented if name.startswith(("QUIVR_", "MAX_")) and name not in read]
    assert stale == [], "README rows for variables nothing reads"
    for name, field in read.items():
        code = re.fullmatch(r"`([^`]*)`", documented[name])
        if code and field.default is not None:
            assert code.group(1) == shown(field.default), (name, documented[name], field.default)
