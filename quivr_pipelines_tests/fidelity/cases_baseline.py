"""Formats that were always right: they keep the harness honest (a case that can pass)."""

from quivr_pipelines_tests.fidelity import FidelityCase

CASES = [
    FidelityCase(
        name="baseline-utf8.txt",
        build=lambda: b"Plain notes\n\nThe lighthouse keeper logs every passing tanker at dawn.\n",
        sentence="The lighthouse keeper logs every passing tanker at dawn.",
    ),
]
