"""`keys create --expires-in-days`: a zero, negative or non-finite value used to make a key that
never expires (0 is falsy, so no expiry was set); it is now refused before anything is created."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from quivr_pipelines.cli import app
from quivr_pipelines_tests.test_cli import _usage_error, runner


@pytest.mark.parametrize("days", ["0", "0.0", "-1", "-0.5", "nan", "inf", "100000"])
def test_a_non_positive_or_absurd_expiry_is_refused(settings_env, days):
    result = runner.invoke(app, ["keys", "create", "bot", f"--expires-in-days={days}"])
    _usage_error(result, "--expires-in-days")
    assert "positive" in result.output
    assert json.loads(runner.invoke(app, ["keys", "list", "--json"]).output) == []  # nothing created


def test_a_positive_expiry_is_set_and_no_option_means_never(settings_env):
    from quivr_pipelines.core.catalog import api_keys
    from quivr_pipelines.core.factory import open_database

    assert runner.invoke(app, ["keys", "create", "short", "--expires-in-days", "0.5"]).exit_code == 0
    assert runner.invoke(app, ["keys", "create", "forever"]).exit_code == 0
    db = open_database(settings_env)
    try:
        keys = {k.name: k for k in api_keys.list_keys(db)}
    finally:
        db.close()
    left = keys["short"].expires_at - datetime.now(UTC)
    assert timedelta(hours=11) < left <= timedelta(hours=12)
    assert keys["forever"].expires_at is None
