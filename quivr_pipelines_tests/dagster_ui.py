"""What the Dagster web UI shows, read through the GraphQL API the UI itself reads.

`ui_context(instance)` loads a code location the way `dagster-webserver` does (a gRPC code
server in a subprocess, behind a `WorkspaceProcessContext`) over a real `DagsterInstance`, and
each query runs in a fresh request context, as every HTTP request to the webserver does (so
dynamic partitions and loaders are never stale between two queries).

The readers below send the UI's own operations (same operation name, root fields and
arguments as dagster-webserver 1.13.27's bundle; selections trimmed to the fields read here) and
reduce the answer the way the UI's TypeScript does (`usePartitionHealthData.tsx`,
`useAssetCheckPartitionData.tsx`, `asset-checks/util.tsx`):

| view                                          | operation                        |
| --------------------------------------------- | -------------------------------- |
| asset page header, definition                 | AssetViewDefinitionQuery         |
| live status, partition counts, check icons    | AssetGraphLiveQuery              |
| overview "Latest materialization" + Metadata  | AssetOverviewMetadataEventsQuery |
| Partitions tab (status counts, list)          | PartitionHealthQuery             |
| Partitions tab, one partition selected        | AssetPartitionDetailQuery        |
| Checks tab (list of checks)                   | AssetChecksQuery                 |
| check "Execution history"                     | AssetCheckDetailsQuery           |
| check "Partitions" tab                        | AssetCheckPartitionHealthQuery   |
| check "Partitions", one partition selected    | AssetCheckPartitionDetailQuery   |
| asset health badge (never sent by the OSS UI) | AssetHealthQuery                 |

`UI_VIEWS` lists every asset-specific operation Chromium was seen sending per view.
`ui_query_text(name)` returns the exact document the installed UI bundle sends (fragments
included), and `run_ui_operation` runs it: that is what a benchmark should time.

Only this test helper touches Dagster internals, and only through `dagster_graphql.test.utils`
(there is no public in-process workspace API in 1.13).
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

AssetKeyLike = str | Sequence[str] | dg.AssetKey

# --- the code location ---------------------------------------------------------------------------


class UIContext:
    """A loaded code location over an instance; `execute` is one webserver request."""

    def __init__(self, instance: dg.DagsterInstance, process_context: Any, location_name: str):
        self.instance = instance
        self.process_context = process_context
        self.location_name = location_name

    def request_context(self) -> Any:
        return self.process_context.create_request_context()

    def execute(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run one GraphQL document as the webserver would; raise on any GraphQL error."""
        from dagster_graphql.test.utils import execute_dagster_graphql

        # Entered like the webserver does: that sets the partition loading context, without which
        # resolving a dynamically partitioned check's partitionStatuses raises.
        with self.request_context() as request:
            return execute_dagster_graphql(request, query, dict(variables or {})).data

    def reload(self) -> None:
        """Reload the code location (after its definitions changed), like the UI's Reload button."""
        self.process_context.reload_code_location(self.location_name)


@contextmanager
def ui_context(
    instance: dg.DagsterInstance,
    module: str = "quivr_pipelines.definitions",
    attribute: str | None = "defs",
    working_directory: str | os.PathLike | None = None,
    location_name: str = "quivr_pipelines",
    python_file: str | os.PathLike | None = None,
) -> Iterator[UIContext]:
    """Load `module:attribute` (or `python_file:attribute`) as a code location over `instance`.

    The location runs in a gRPC code server subprocess, exactly like `dagster-webserver -m`.
    """
    from dagster_graphql.test.utils import define_out_of_process_workspace

    if python_file is not None:
        entry: dict[str, Any] = {"python_file": {"relative_path": str(python_file)}}
        key = "python_file"
    else:
        entry = {"python_module": {"module_name": module}}
        key = "python_module"
    if attribute:
        entry[key]["attribute"] = attribute
    entry[key]["location_name"] = location_name
    entry[key]["working_directory"] = str(working_directory or Path(__file__).resolve().parents[1])

    with tempfile.TemporaryDirectory(prefix="dagster-ui-workspace-") as folder:
        workspace_file = Path(folder) / "workspace.yaml"
        workspace_file.write_text(yaml.safe_dump({"load_from": [entry]}))
        with define_out_of_process_workspace(str(workspace_file), None, instance) as process_context:
            request = process_context.create_request_context()
            if location_name not in list(request.code_location_names):
                raise RuntimeError(f"no code location {location_name!r} in {list(request.code_location_names)}")
            if request.has_code_location_error(location_name):
                error = request.get_code_location_error(location_name)
                raise RuntimeError(f"code location {location_name!r} failed to load:\n{error.to_string()}")
            yield UIContext(instance, process_context, location_name)


def _execute(context: Any, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(context, UIContext):
        return context.execute(query, variables)
    # A WorkspaceRequestContext (e.g. from dagster_graphql.test.utils.define_out_of_process_context),
    # entered for this query like the webserver enters each request's.
    from dagster_graphql.test.utils import execute_dagster_graphql

    with context:
        return execute_dagster_graphql(context, query, dict(variables)).data


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """`(fn(*args, **kwargs), seconds)`, wall clock."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def asset_key_input(asset_key: AssetKeyLike) -> dict[str, list[str]]:
    if isinstance(asset_key, dg.AssetKey):
        return {"path": list(asset_key.path)}
    if isinstance(asset_key, str):
        return {"path": asset_key.split("/")}
    return {"path": list(asset_key)}


# --- the UI's exact documents ----------------------------------------------------------------------

_JS_STRING = re.compile(r'"((?:[^"\\\n]|\\.)*?(?:query|fragment|mutation|subscription) [A-Za-z_]\w*(?:[^"\\\n]|\\.)*)"')


@functools.lru_cache(maxsize=1)
def _ui_definitions() -> tuple[dict[str, Any], dict[str, Any]]:
    """Every named operation and fragment in the installed dagster-webserver JS bundles.

    The bundles keep each `gql` template as string pieces split at `${FRAGMENT}` interpolations,
    which sit between definitions, so every piece parses on its own.
    """
    import dagster_webserver
    import graphql

    build = Path(dagster_webserver.__file__).parent / "webapp" / "build"
    operations: dict[str, Any] = {}
    fragments: dict[str, Any] = {}
    for path in sorted(glob.glob(str(build / "**" / "*.js"), recursive=True)):
        source = Path(path).read_text(encoding="utf-8", errors="replace")
        for match in _JS_STRING.finditer(source):
            if "{" not in match.group(1):
                continue
            try:
                document = graphql.parse(json.loads(f'"{match.group(1)}"'))
            except (ValueError, graphql.GraphQLError):
                continue
            for definition in document.definitions:
                if isinstance(definition, graphql.OperationDefinitionNode) and definition.name:
                    operations.setdefault(definition.name.value, definition)
                elif isinstance(definition, graphql.FragmentDefinitionNode):
                    fragments.setdefault(definition.name.value, definition)
    if not operations:
        raise RuntimeError(f"no GraphQL operations found in {build}")
    return operations, fragments


def ui_operation_names() -> list[str]:
    return sorted(_ui_definitions()[0])


@functools.cache
def ui_query_text(operation_name: str) -> str:
    """The document the installed UI sends for `operation_name`, with every fragment it spreads."""
    import graphql

    operations, fragments = _ui_definitions()
    if operation_name not in operations:
        raise KeyError(f"the UI bundle has no operation {operation_name!r}")
    needed: dict[str, Any] = {}

    class Spreads(graphql.Visitor):
        def enter_fragment_spread(self, node, *_):
            name = node.name.value
            if name not in needed:
                if name not in fragments:
                    raise KeyError(f"{operation_name} spreads unknown fragment {name!r}")
                needed[name] = fragments[name]
                graphql.visit(fragments[name], self)

    operation = operations[operation_name]
    graphql.visit(operation, Spreads())
    document = graphql.DocumentNode(definitions=(operation, *needed.values()))
    return graphql.print_ast(document)


def ui_operation_variables(operation_name: str) -> list[str]:
    """The variable names of the UI's operation (to check the trimmed copies below still match)."""
    operation = _ui_definitions()[0][operation_name]
    return [v.variable.name.value for v in operation.variable_definitions]


def run_ui_operation(context: Any, operation_name: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    """Run the UI's exact document for `operation_name`."""
    return _execute(context, ui_query_text(operation_name), variables)


# --- trimmed copies of the UI's operations ---------------------------------------------------------

_METADATA_ENTRY = """
fragment MetadataEntryFragment on MetadataEntry {
  __typename
  label
  description
  ... on PathMetadataEntry { path }
  ... on NotebookMetadataEntry { path }
  ... on JsonMetadataEntry { jsonString }
  ... on UrlMetadataEntry { url }
  ... on TextMetadataEntry { text }
  ... on MarkdownMetadataEntry { mdStr }
  ... on PythonArtifactMetadataEntry { module name }
  ... on FloatMetadataEntry { floatValue }
  ... on TimestampMetadataEntry { timestamp }
  ... on IntMetadataEntry { intValue intRepr }
  ... on BoolMetadataEntry { boolValue }
  ... on PipelineRunMetadataEntry { runId }
  ... on AssetMetadataEntry { assetKey { path } }
  ... on JobMetadataEntry { jobName repositoryName locationName }
  ... on TableMetadataEntry { table { records } }
  ... on PoolMetadataEntry { pool }
}
"""

_CHECK_DEFAULT_STATUSES = """
  succeededPartitions failedPartitions inProgressPartitions skippedPartitions executionFailedPartitions
"""

QUERIES: dict[str, str] = {
    "AssetViewDefinitionQuery": """
query AssetViewDefinitionQuery($assetKey: AssetKeyInput!) {
  assetOrError(assetKey: $assetKey) {
    __typename
    ... on Asset {
      id
      key { path }
      hasDefinitionOrRecord
      assetMaterializations(limit: 1) { timestamp runId }
      definition {
        id
        groupName
        description
        isPartitioned
        jobNames
        partitionDefinition { description dimensionTypes { type dynamicPartitionsDefinitionName } }
        partitionKeysByDimension { name }
        repository { name location { name } }
      }
    }
  }
}
""",
    "AssetGraphLiveQuery": """
query AssetGraphLiveQuery($assetKeys: [AssetKeyInput!]!) {
  assetNodes(assetKeys: $assetKeys, loadMaterializations: true) {
    id
    assetKey { path }
    assetMaterializations(limit: 1) { timestamp runId stepKey }
    assetChecksOrError {
      ... on AssetChecks {
        checks {
          name
          executionForLatestMaterialization {
            id runId status timestamp stepKey
            evaluation { severity }
          }
          partitionDefinition { name description }
          partitionStatuses {
            __typename
            ... on AssetCheckDefaultPartitionStatuses { CHECK_DEFAULT_STATUSES }
            ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } }
          }
        }
      }
    }
    partitionStats { numMaterialized numMaterializing numPartitions numFailed }
  }
  assetsLatestInfo(assetKeys: $assetKeys) {
    id
    assetKey { path }
    unstartedRunIds
    inProgressRunIds
    latestRun { id status startTime endTime }
  }
}
""".replace("CHECK_DEFAULT_STATUSES", _CHECK_DEFAULT_STATUSES),
    "AssetOverviewMetadataEventsQuery": """
query AssetOverviewMetadataEventsQuery($assetKey: AssetKeyInput!) {
  assetOrError(assetKey: $assetKey) {
    ... on Asset {
      id
      assetMaterializations(limit: 1) {
        timestamp runId partition
        metadataEntries { ...MetadataEntryFragment }
      }
    }
  }
}
"""
    + _METADATA_ENTRY,
    "PartitionHealthQuery": """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        __typename
        ... on TimePartitionStatuses { ranges { status startKey endKey } }
        ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
        ... on MultiPartitionStatuses { primaryDimensionName }
      }
    }
  }
}
""",
    "AssetPartitionDetailQuery": """
query AssetPartitionDetailQuery($assetKey: AssetKeyInput!, $partitionKey: String!) {
  assetOrError(assetKey: $assetKey) {
    ... on Asset {
      id
      definition {
        id
        latestRunForPartition(partition: $partitionKey) { id status endTime }
      }
      assetEventHistory(
        partitions: [$partitionKey]
        limit: 1000
        eventTypeSelectors: [MATERIALIZATION, OBSERVATION, FAILED_TO_MATERIALIZE]
      ) {
        results {
          __typename
          ... on MaterializationEvent {
            runId timestamp partition
            metadataEntries { ...MetadataEntryFragment }
          }
          ... on ObservationEvent { runId timestamp partition }
          ... on FailedToMaterializeEvent {
            runId timestamp partition materializationFailureType
            metadataEntries { ...MetadataEntryFragment }
          }
        }
      }
    }
  }
}
"""
    + _METADATA_ENTRY,
    "AssetChecksQuery": """
query AssetChecksQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      assetChecksOrError {
        __typename
        ... on AssetCheckNeedsMigrationError { message }
        ... on AssetChecks {
          checks {
            name
            description
            blocking
            executionForLatestMaterialization {
              id runId status timestamp
              evaluation { severity partition }
            }
            partitionDefinition { name description }
            partitionStatuses {
              __typename
              ... on AssetCheckDefaultPartitionStatuses { CHECK_DEFAULT_STATUSES }
              ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } }
            }
          }
        }
      }
    }
  }
}
""".replace("CHECK_DEFAULT_STATUSES", _CHECK_DEFAULT_STATUSES),
    "AssetCheckDetailsQuery": """
query AssetCheckDetailsQuery($assetKey: AssetKeyInput!, $checkName: String!, $limit: Int!, $cursor: String) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, limit: $limit, cursor: $cursor) {
    id runId status stepKey timestamp partition
    run { id status }
    evaluation {
      severity timestamp description partition success
      metadataEntries { ...MetadataEntryFragment }
    }
  }
}
"""
    + _METADATA_ENTRY,
    "AssetCheckPartitionHealthQuery": """
query AssetCheckPartitionHealthQuery($assetKey: AssetKeyInput!, $checkName: String!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      assetCheckOrError(checkName: $checkName) {
        __typename
        ... on AssetCheck {
          name
          partitionKeysByDimension { name type partitionKeys }
          partitionStatuses {
            __typename
            ... on AssetCheckDefaultPartitionStatuses { CHECK_DEFAULT_STATUSES }
            ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } }
            ... on AssetCheckMultiPartitionStatuses { primaryDimensionName }
          }
        }
      }
    }
  }
}
""".replace("CHECK_DEFAULT_STATUSES", _CHECK_DEFAULT_STATUSES),
    "AssetCheckPartitionDetailQuery": """
query AssetCheckPartitionDetailQuery($assetKey: AssetKeyInput!, $checkName: String!, $partitionKey: String!) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, partition: $partitionKey, limit: 1000) {
    id runId status timestamp stepKey partition
    run { id status }
    evaluation {
      timestamp severity description success partition
      metadataEntries { ...MetadataEntryFragment }
    }
  }
}
"""
    + _METADATA_ENTRY,
    "AssetHealthQuery": """
query AssetHealthQuery($assetKeys: [AssetKeyInput!]!) {
  assetsOrError(assetKeys: $assetKeys) {
    __typename
    ... on AssetConnection {
      nodes {
        id
        key { path }
        assetHealth { assetHealth materializationStatus assetChecksStatus freshnessStatus }
      }
    }
    ... on PythonError { message }
  }
}
""",
}

# The UI's page size for a check's execution history (AutoMaterializePolicyPage PAGE_SIZE).
CHECK_HISTORY_PAGE_SIZE = 30


# --- readers ---------------------------------------------------------------------------------------


def metadata_values(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """`{label: python value}` of MetadataEntryFragment entries, in the order the UI lists them."""
    values: dict[str, Any] = {}
    for entry in entries:
        kind = entry.get("__typename")
        if kind == "IntMetadataEntry":
            value: Any = int(entry["intRepr"]) if entry.get("intRepr") is not None else entry.get("intValue")
        elif kind == "FloatMetadataEntry":
            value = entry["floatValue"]
        elif kind == "TextMetadataEntry":
            value = entry["text"]
        elif kind == "MarkdownMetadataEntry":
            value = entry["mdStr"]
        elif kind == "JsonMetadataEntry":
            value = json.loads(entry["jsonString"])
        elif kind == "BoolMetadataEntry":
            value = entry["boolValue"]
        elif kind == "UrlMetadataEntry":
            value = entry["url"]
        elif kind in ("PathMetadataEntry", "NotebookMetadataEntry"):
            value = entry["path"]
        elif kind == "TimestampMetadataEntry":
            value = entry["timestamp"]
        elif kind == "PipelineRunMetadataEntry":
            value = entry["runId"]
        elif kind == "AssetMetadataEntry":
            value = "/".join(entry["assetKey"]["path"])
        elif kind == "TableMetadataEntry":
            value = [json.loads(record) for record in entry["table"]["records"]]
        elif kind == "JobMetadataEntry":
            value = entry["jobName"]
        elif kind == "PoolMetadataEntry":
            value = entry["pool"]
        elif kind == "NullMetadataEntry":
            value = None
        else:
            value = {k: v for k, v in entry.items() if k not in ("label", "description")}
        values[entry["label"]] = value
    return values


def asset_definition(context: Any, asset_key: AssetKeyLike) -> dict[str, Any] | None:
    """AssetViewDefinitionQuery: `assetOrError` (None when the asset is unknown)."""
    data = _execute(context, QUERIES["AssetViewDefinitionQuery"], {"assetKey": asset_key_input(asset_key)})
    asset = data["assetOrError"]
    return asset if asset["__typename"] == "Asset" else None


def asset_live_data(context: Any, asset_key: AssetKeyLike) -> dict[str, Any]:
    """AssetGraphLiveQuery for one asset: its node (partitionStats, checks) and its latest info."""
    data = _execute(context, QUERIES["AssetGraphLiveQuery"], {"assetKeys": [asset_key_input(asset_key)]})
    if not data["assetNodes"]:
        raise KeyError(f"no asset node {asset_key!r}")
    return {"node": data["assetNodes"][0], "latest_info": (data["assetsLatestInfo"] or [None])[0]}


def asset_partition_stats(context: Any, asset_key: AssetKeyLike) -> dict[str, int] | None:
    """The counts behind the UI's "N materialized / N failed / N missing" (AssetGraphLiveQuery)."""
    stats = asset_live_data(context, asset_key)["node"]["partitionStats"]
    if stats is None:
        return None
    return {
        "materialized": stats["numMaterialized"],
        "failed": stats["numFailed"],
        "materializing": stats["numMaterializing"],
        "missing": stats["numPartitions"] - stats["numMaterialized"] - stats["numFailed"] - stats["numMaterializing"],
        "total": stats["numPartitions"],
    }


def asset_overview_status(context: Any, asset_key: AssetKeyLike) -> dict[str, Any]:
    """The overview's "Latest materialization" tag (SimpleStakeholderAssetStatus over
    AssetGraphLiveQuery): `{status, run_id}` with status MATERIALIZING (a run in progress),
    FAILED (the latest run failed after the latest materialization, whatever partition it
    targeted), MATERIALIZED or NEVER_MATERIALIZED."""
    live = asset_live_data(context, asset_key)
    info = live["latest_info"] or {}
    if info.get("inProgressRunIds"):
        return {"status": "MATERIALIZING", "run_id": info["inProgressRunIds"][0]}
    latest_run = info.get("latestRun")
    materializations = live["node"]["assetMaterializations"]
    last = materializations[0] if materializations else None
    if latest_run and latest_run["status"] == "FAILURE":
        shown = not (
            last
            and (
                last["runId"] == latest_run["id"] or float(last["timestamp"]) > float(latest_run["endTime"] or 0) * 1000
            )
        )
        if shown:
            return {"status": "FAILED", "run_id": latest_run["id"]}
    if last:
        return {"status": "MATERIALIZED", "run_id": last["runId"]}
    return {"status": "NEVER_MATERIALIZED", "run_id": None}


def _expand_ranges(keys: Sequence[str], ranges: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    index = {key: i for i, key in enumerate(keys)}
    statuses: dict[str, str] = {}
    for r in ranges:
        start, end = index.get(r["startKey"]), index.get(r["endKey"])
        if start is None or end is None:
            continue
        for key in keys[start : end + 1]:
            statuses[key] = r["status"]
    return statuses


def asset_partition_status(context: Any, asset_key: AssetKeyLike) -> dict[str, list[str]]:
    """PartitionHealthQuery, reduced like the Partitions tab: every partition key in exactly one
    of materialized / materializing / failed / missing (the UI's precedence, in key order)."""
    data = _execute(context, QUERIES["PartitionHealthQuery"], {"assetKey": asset_key_input(asset_key)})
    node = data["assetNodeOrError"]
    if node["__typename"] != "AssetNode":
        raise KeyError(f"no asset node {asset_key!r}: {node['__typename']}")
    dimensions = node["partitionKeysByDimension"]
    result: dict[str, list[str]] = {"materialized": [], "materializing": [], "failed": [], "missing": []}
    if not dimensions:
        return result
    if len(dimensions) > 1:
        raise NotImplementedError("multi-partitioned assets are not read by this helper")
    keys = dimensions[0]["partitionKeys"]
    statuses = node["assetPartitionStatuses"]
    if statuses["__typename"] == "DefaultPartitionStatuses":
        materialized = set(statuses["materializedPartitions"])
        materializing = set(statuses["materializingPartitions"])
        failed = set(statuses["failedPartitions"])
        for key in keys:
            if key in materialized:
                result["materialized"].append(key)
            elif key in materializing:
                result["materializing"].append(key)
            elif key in failed:
                result["failed"].append(key)
            else:
                result["missing"].append(key)
    elif statuses["__typename"] == "TimePartitionStatuses":
        by_key = _expand_ranges(keys, statuses["ranges"])
        for key in keys:
            result[
                {"MATERIALIZED": "materialized", "MATERIALIZING": "materializing", "FAILED": "failed"}.get(
                    by_key.get(key), "missing"
                )
            ].append(key)
    else:
        raise NotImplementedError(statuses["__typename"])
    return result


def latest_materialization(
    context: Any, asset_key: AssetKeyLike, partition: str | None = None
) -> dict[str, Any] | None:
    """The latest materialization the UI shows: the overview's (AssetOverviewMetadataEventsQuery,
    latest over all partitions) or, with `partition`, the Partitions tab detail pane's
    (AssetPartitionDetailQuery). `{partition, run_id, timestamp, metadata}` or None."""
    key = asset_key_input(asset_key)
    if partition is None:
        data = _execute(context, QUERIES["AssetOverviewMetadataEventsQuery"], {"assetKey": key})
        asset = data["assetOrError"] or {}
        events = asset.get("assetMaterializations") or []
    else:
        data = _execute(context, QUERIES["AssetPartitionDetailQuery"], {"assetKey": key, "partitionKey": partition})
        asset = data["assetOrError"] or {}
        history = asset.get("assetEventHistory") or {"results": []}
        events = [e for e in history["results"] if e["__typename"] == "MaterializationEvent"]
    if not events:
        return None
    event = max(events, key=lambda e: float(e["timestamp"]))
    return {
        "partition": event["partition"],
        "run_id": event["runId"],
        "timestamp": float(event["timestamp"]) / 1000.0,
        "metadata": metadata_values(event["metadataEntries"]),
    }


def latest_materialization_metadata(
    context: Any, asset_key: AssetKeyLike, partition: str | None = None
) -> dict[str, Any]:
    """`{label: value}` of the latest materialization's metadata ({} when there is none)."""
    latest = latest_materialization(context, asset_key, partition)
    return latest["metadata"] if latest else {}


def partition_detail(context: Any, asset_key: AssetKeyLike, partition: str) -> dict[str, Any]:
    """AssetPartitionDetailQuery: the latest run for the partition and its event history."""
    data = _execute(
        context,
        QUERIES["AssetPartitionDetailQuery"],
        {"assetKey": asset_key_input(asset_key), "partitionKey": partition},
    )
    asset = data["assetOrError"] or {}
    run = (asset.get("definition") or {}).get("latestRunForPartition")
    events = (asset.get("assetEventHistory") or {"results": []})["results"]
    return {
        "latest_run": {"id": run["id"], "status": run["status"]} if run else None,
        "events": [
            {
                "type": e["__typename"],
                "run_id": e["runId"],
                "timestamp": float(e["timestamp"]) / 1000.0,
                "metadata": metadata_values(e.get("metadataEntries") or []),
                **({"failure_type": e["materializationFailureType"]} if "materializationFailureType" in e else {}),
            }
            for e in events
        ],
    }


def _execution(execution: Mapping[str, Any]) -> dict[str, Any]:
    evaluation = execution.get("evaluation")
    return {
        "id": execution["id"],
        "run_id": execution["runId"],
        "status": execution["status"],
        "severity": evaluation["severity"] if evaluation else None,
        "passed": evaluation["success"] if evaluation and "success" in evaluation else None,
        "description": evaluation["description"] if evaluation else None,
        "metadata": metadata_values(evaluation["metadataEntries"]) if evaluation else {},
        "partition": (evaluation or {}).get("partition", execution.get("partition")),
        "timestamp": (evaluation or {}).get("timestamp") or execution["timestamp"],
        "run_status": (execution.get("run") or {}).get("status"),
    }


def check_executions(
    context: Any,
    asset_key: AssetKeyLike,
    check_name: str,
    partition: str | None = None,
    limit: int = CHECK_HISTORY_PAGE_SIZE,
) -> list[dict[str, Any]]:
    """A check's "Execution history" (AssetCheckDetailsQuery, first page, newest first as the UI
    sorts it) or, with `partition`, that partition's executions (AssetCheckPartitionDetailQuery)."""
    key = asset_key_input(asset_key)
    if partition is None:
        data = _execute(
            context, QUERIES["AssetCheckDetailsQuery"], {"assetKey": key, "checkName": check_name, "limit": limit}
        )
    else:
        data = _execute(
            context,
            QUERIES["AssetCheckPartitionDetailQuery"],
            {"assetKey": key, "checkName": check_name, "partitionKey": partition},
        )
    executions = [_execution(e) for e in data["assetCheckExecutions"]]
    return sorted(executions, key=lambda e: e["timestamp"], reverse=True)


def check_latest_execution(
    context: Any, asset_key: AssetKeyLike, check_name: str, partition: str | None = None
) -> dict[str, Any] | None:
    """The newest row of the check's execution history: `{status, severity, metadata, partition, ...}`."""
    executions = check_executions(context, asset_key, check_name, partition=partition)
    return executions[0] if executions else None


def check_partition_statuses(context: Any, asset_key: AssetKeyLike, check_name: str) -> dict[str, str]:
    """AssetCheckPartitionHealthQuery, reduced like the check's Partitions tab:
    `{partition: MISSING|SUCCEEDED|FAILED|IN_PROGRESS|SKIPPED|EXECUTION_FAILED}`."""
    data = _execute(
        context,
        QUERIES["AssetCheckPartitionHealthQuery"],
        {"assetKey": asset_key_input(asset_key), "checkName": check_name},
    )
    node = data["assetNodeOrError"] or {}
    check = node.get("assetCheckOrError") or {}
    if check.get("__typename") != "AssetCheck":
        raise KeyError(f"no check {check_name!r} on {asset_key!r}: {check.get('__typename')}")
    dimensions = check["partitionKeysByDimension"] or []
    if len(dimensions) > 1:
        raise NotImplementedError("multi-partitioned checks are not read by this helper")
    keys = dimensions[0]["partitionKeys"] if dimensions else []
    result = {key: "MISSING" for key in keys}
    statuses = check["partitionStatuses"]
    if statuses is None:
        return result
    if statuses["__typename"] == "AssetCheckDefaultPartitionStatuses":
        # Same order as the UI: a later list wins.
        for field, status in (
            ("succeededPartitions", "SUCCEEDED"),
            ("failedPartitions", "FAILED"),
            ("inProgressPartitions", "IN_PROGRESS"),
            ("skippedPartitions", "SKIPPED"),
            ("executionFailedPartitions", "EXECUTION_FAILED"),
        ):
            for key in statuses.get(field) or []:
                result[key] = status
    elif statuses["__typename"] == "AssetCheckTimePartitionStatuses":
        result.update(_expand_ranges(keys, statuses["ranges"]))
    else:
        raise NotImplementedError(statuses["__typename"])
    return result


def _check_badge(check: Mapping[str, Any]) -> str:
    """asset-checks/util.tsx getAggregateCheckIconType: the icon of a check on the overview
    ("Latest check results") and in the Checks tab list."""
    execution = check.get("executionForLatestMaterialization")
    severity = ((execution or {}).get("evaluation") or {}).get("severity")
    statuses = check.get("partitionStatuses")
    counts = None
    if statuses and statuses["__typename"] == "AssetCheckDefaultPartitionStatuses":
        counts = {field: len(statuses.get(field) or []) for field in _CHECK_DEFAULT_STATUSES.split()}
    elif statuses and statuses["__typename"] == "AssetCheckTimePartitionStatuses":
        counts = {field: 0 for field in _CHECK_DEFAULT_STATUSES.split()}
        names = {
            "SUCCEEDED": "succeededPartitions",
            "FAILED": "failedPartitions",
            "IN_PROGRESS": "inProgressPartitions",
            "SKIPPED": "skippedPartitions",
            "EXECUTION_FAILED": "executionFailedPartitions",
        }
        for r in statuses["ranges"]:
            counts[names[r["status"]]] += 1
    if not counts or not any(counts.values()):
        if not execution:
            return "NOT_EVALUATED"
        status = execution["status"]
        if status == "FAILED":
            return "WARN" if severity == "WARN" else "ERROR"
        return "ERROR" if status == "EXECUTION_FAILED" else status
    if counts["failedPartitions"] or counts["executionFailedPartitions"]:
        return "WARN" if severity == "WARN" else "ERROR"
    if counts["inProgressPartitions"]:
        return "IN_PROGRESS"
    if counts["skippedPartitions"]:
        return "SKIPPED"
    return "SUCCEEDED" if counts["succeededPartitions"] else "NOT_EVALUATED"


def asset_checks(context: Any, asset_key: AssetKeyLike) -> dict[str, dict[str, Any]]:
    """The Checks tab list (AssetChecksQuery): `{name: {badge, partitioned, latest}}`."""
    data = _execute(context, QUERIES["AssetChecksQuery"], {"assetKey": asset_key_input(asset_key)})
    node = data["assetNodeOrError"] or {}
    checks = node.get("assetChecksOrError") or {}
    if checks.get("__typename") != "AssetChecks":
        raise RuntimeError(f"checks of {asset_key!r}: {checks}")
    return {
        c["name"]: {
            "badge": _check_badge(c),
            "partitioned": c["partitionDefinition"] is not None,
            "latest": c["executionForLatestMaterialization"],
        }
        for c in checks["checks"]
    }


def check_badges(context: Any, asset_key: AssetKeyLike) -> dict[str, str]:
    """The overview's "Latest check results" icons (AssetGraphLiveQuery): `{check name: badge}`."""
    node = asset_live_data(context, asset_key)["node"]
    checks = (node.get("assetChecksOrError") or {}).get("checks") or []
    return {c["name"]: _check_badge(c) for c in checks}


def asset_health(context: Any, asset_key: AssetKeyLike) -> str | None:
    """AssetHealthQuery's `assetHealth.assetHealth` (HEALTHY/WARNING/DEGRADED/UNKNOWN/NOT_APPLICABLE).

    None on an OSS instance: `DagsterInstance.dagster_asset_health_queries_supported()` is False
    there, and the OSS UI never sends this query (`assetHealthEnabled()` returns false).
    """
    data = _execute(context, QUERIES["AssetHealthQuery"], {"assetKeys": [asset_key_input(asset_key)]})
    assets = data["assetsOrError"]
    if assets["__typename"] != "AssetConnection":
        raise RuntimeError(assets.get("message"))
    if not assets["nodes"] or assets["nodes"][0]["assetHealth"] is None:
        return None
    return assets["nodes"][0]["assetHealth"]["assetHealth"]


# The asset-specific operations a browser sends for each view, as recorded from Chromium on
# dagster-webserver 1.13.27 (benchmarks/ui_screenshot.py writes them to graphql.json). Every page
# also sends ShouldShowNux, AssetRecordsQuery, CodeLocationStatusQuery, InstanceWarningQuery,
# PermissionsQuery (and LocationWorkspaceQuery/LocationWorkspaceAssetsQuery when its IndexedDB
# cache is cold); the overview sends AssetGraphLiveQuery, AssetsFreshnessInfoQuery and
# AssetStaleStatusDataQuery a second time for the neighbouring assets; the Partitions tab sends
# PartitionHealthQuery twice. Checks polls AssetChecksQuery/AssetCheckDetailsQuery every 15 s.
UI_VIEWS: dict[str, list[str]] = {
    "asset_overview": [
        "AssetViewDefinitionQuery",
        "AssetOverviewMetadataEventsQuery",
        "AssetGraphLiveQuery",
        "AssetStaleStatusDataQuery",
        "AssetsFreshnessInfoQuery",
        "AssetDefinitionCollisionQuery",
    ],
    "asset_partitions": [
        "AssetViewDefinitionQuery",
        "PartitionHealthQuery",
        "AssetGraphLiveQuery",
        "AssetStaleStatusDataQuery",
        "AssetsFreshnessInfoQuery",
    ],
    "asset_partition_selected": ["AssetPartitionDetailQuery", "AssetPartitionStaleQuery"],
    "asset_checks": ["AssetViewDefinitionQuery", "AssetGraphLiveQuery", "AssetChecksQuery", "AssetCheckDetailsQuery"],
    "check_partitions": ["AssetCheckPartitionHealthQuery"],
    "check_partition_selected": ["AssetCheckPartitionDetailQuery"],
}


def ui_variables(
    operation_name: str, asset_key: AssetKeyLike, check_name: str | None = None, partition: str | None = None
) -> dict[str, Any]:
    """The variables the UI sends with `operation_name` for one asset (and check / partition)."""
    key = asset_key_input(asset_key)
    candidates = {
        "assetKey": key,
        "assetKeys": [key],
        "checkName": check_name,
        "partitionKey": partition,
        "limit": CHECK_HISTORY_PAGE_SIZE,
    }
    return {
        name: candidates[name] for name in ui_operation_variables(operation_name) if candidates.get(name) is not None
    }


def time_ui_view(
    context: Any, view: str, asset_key: AssetKeyLike, check_name: str | None = None, partition: str | None = None
) -> dict[str, float]:
    """Seconds each exact UI operation of `view` takes (one after the other, as separate requests)."""
    return {
        name: timed(run_ui_operation, context, name, ui_variables(name, asset_key, check_name, partition))[1]
        for name in UI_VIEWS[view]
    }
