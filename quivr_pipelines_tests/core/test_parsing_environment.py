"""Importing the parsing modules changes no environment variable; setting up parsing opts out of
unstructured's telemetry, unless the environment already chose."""

import json
import os
import subprocess
import sys

from quivr_pipelines.core.parsing.offline_nlp import QUIET_UNSTRUCTURED

PROBE = """
import json, os
before = dict(os.environ)
import quivr_pipelines.core.parsing.workers
from quivr_pipelines.core.parsing import offline_nlp
imported = dict(os.environ)
offline_nlp.quiet_unstructured()
print(json.dumps({"changed_at_import": sorted(set(imported.items()) ^ set(before.items())),
                  "after_setup": {name: os.environ.get(name) for name in offline_nlp.QUIET_UNSTRUCTURED}}))
"""


def probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in QUIET_UNSTRUCTURED}
    output = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True,
                            text=True, check=True).stdout
    return json.loads(output.splitlines()[-1])


def test_import_writes_nothing_and_setup_opts_out():
    result = probe()
    assert result["changed_at_import"] == []
    assert result["after_setup"] == QUIET_UNSTRUCTURED


def test_setup_keeps_what_the_environment_chose():
    assert probe(DO_NOT_TRACK="")["after_setup"]["DO_NOT_TRACK"] == ""
