"""The Dagster code location: every object under `defs/`, plus the resources they share."""

import dagster as dg

import quivr_pipelines.defs
from quivr_pipelines.resources import default_resources


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_defs(defs_root=quivr_pipelines.defs),
        dg.Definitions(resources=default_resources()),
    )
