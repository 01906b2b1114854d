"""The Dagster code location: every object under `defs/`, and the resources bound from `Settings`."""

from pathlib import Path

import dagster as dg

from quivr_pipelines.resources import resources_from_settings
from quivr_pipelines.settings import get_settings


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent / "defs"),
        dg.Definitions(resources=resources_from_settings(get_settings())),
    )
