"""The Grafana dashboard ``config/grafana/annotation-gateway.json`` (issue 12): Grafana itself
cannot run here, so this checks what can be checked without it.

- its shape: Infinity targets (JSON over a URL, backend parser, ``root_selector`` and typed
  ``columns`` as the datasource's query model has them), one datasource variable, unique panel
  ids, every panel placed;
- every target's URL parses, points at the gateway's metrics or agreement route, uses only the
  parameters SPEC §8 names (with values SPEC §8 allows) and carries Grafana's ``${__from}`` and
  ``${__to}`` as ``from`` / ``to`` (epoch milliseconds, which SPEC §8 accepts);
- the honest part: each URL's parameters build the gateway's own :class:`MetricsSpec` (so they
  validate), the aggregators then run over generated annotations inside a window such as
  Grafana would send, and every column a panel reads is a field of the rows (or results, or
  ``sources[]``) that the gateway answers - with the type the column declares. A column that
  reads ``name`` from a query not grouped by ``name``, or ``bucket`` as a time from a query
  without ``interval`` (where it is null), fails here;
- and against the routes themselves: every parameter a URL sends is one the gateway's OpenAPI
  declares for that path, and its value (Grafana's window filled in as epoch milliseconds)
  validates against the declared schema;
- the transformations only name columns the target reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jsonschema
import pytest

from annotation_gateway.aggregate.agreement import RATER_FIELDS, AgreementAggregator
from annotation_gateway.aggregate.metrics import GROUP_KEYS, MetricsAggregator, MetricsSpec
from annotation_gateway.api.app import create_app
from annotation_gateway.api.schemas import SourceStatusModel
from annotation_gateway.model import AnnotatorKind, ProviderKind
from annotation_gateway.records import record_of
from tests.api.fake_federation import FakeFederation, fake_settings
from tests.fakes import make_annotation

DASHBOARD = Path(__file__).resolve().parents[1] / "config" / "grafana" / "annotation-gateway.json"
INFINITY = "yesoreyeram-infinity-datasource"
GATEWAY = "http://127.0.0.1:8080"

# SPEC §3's filters of /v1/annotations, §7's scope, and §8's own parameters.
FILTERS = {
    "subject_id",
    "subject_kind",
    "identifier",
    "name",
    "exclude_name",
    "source",
    "provider",
    "annotator_kind",
    "project",
    "updated_after",
    "updated_before",
    "partial",
    "scope",
    "queue",
}
METRICS_PARAMS = FILTERS | {"group_by", "interval", "time_field", "from", "to", "format"}
AGREEMENT_PARAMS = FILTERS | {"by", "from", "to", "time_field", "format"}
SPEC_GROUP_KEYS = {
    "name",
    "source",
    "provider",
    "annotator_kind",
    "annotator_id",
    "subject_kind",
    "project",
    "queue",
    "label",
}
SPEC_INTERVALS = {"hour", "day", "week", "month"}
SPEC_ROW_FIELDS = {
    "bucket",
    "count",
    "score_count",
    "score_mean",
    "score_stdev",
    "score_min",
    "score_max",
    "score_p50",
    "score_p90",
    "label_counts",
}
COLUMN_TYPES = {"string", "number", "timestamp", "timestamp_epoch", "timestamp_epoch_s"}

# The dashboard's time range as Grafana would send it: ${__from} / ${__to} in epoch milliseconds.
WINDOW_START = datetime(2026, 11, 2, tzinfo=UTC)
WINDOW_END = datetime(2026, 12, 2, tzinfo=UTC)


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel, target


def variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [v for v in dashboard["templating"]["list"] if v["name"] == name]
    assert isinstance(found, dict)
    return found


def resolved_url(dashboard: dict[str, Any], url: str) -> str:
    """The target's URL with the dashboard's own variables filled in (Grafana's stay)."""
    return url.replace("${gateway}", variable(dashboard, "gateway")["query"])


def parameters(dashboard: dict[str, Any], target: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    parts = urlsplit(resolved_url(dashboard, target["url"]))
    assert f"{parts.scheme}://{parts.netloc}" == GATEWAY
    assert not parts.fragment
    return parts.path, parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)


# -------------------------------------------------------------------------------------- the shape


def test_dashboard_shape(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "annotation-gateway"
    ds = variable(dashboard, "ds")
    assert ds["type"] == "datasource"
    assert ds["query"] == INFINITY
    gateway = variable(dashboard, "gateway")
    assert gateway["query"] == GATEWAY
    assert gateway["current"]["value"] == GATEWAY
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    kinds = {p["type"] for p in dashboard["panels"]}
    assert {"timeseries", "barchart", "table"} <= kinds
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": INFINITY, "uid": "${ds}"}
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]
    for panel, target in targets(dashboard):
        assert target["datasource"] == panel["datasource"]
        assert target["type"] == "json"
        assert target["source"] == "url"
        assert target["parser"] == "backend"
        assert target["format"] in {"table", "timeseries", "dataframe"}
        assert target["url_options"]["method"] == "GET"
        assert target["root_selector"] in {"rows", "sources", "results"}
        assert target["columns"], panel["title"]
        for column in target["columns"]:
            assert set(column) >= {"selector", "text", "type"}
            assert column["type"] in COLUMN_TYPES


def test_the_panels_the_issue_asks_for(dashboard: dict[str, Any]) -> None:
    """Mean score per name and source over time, the label distribution, the counts per day."""
    by_query: dict[tuple[str, str, str], dict[str, Any]] = {}
    for panel, target in targets(dashboard):
        path, params = parameters(dashboard, target)
        grouping = ",".join(v for k, v in params if k == "group_by")
        interval = dict(params).get("interval", "")
        by_query[(path, f"{grouping}|{interval}", target["root_selector"])] = {
            "panel": panel,
            "target": target,
        }
    means = by_query[("/v1/annotations/metrics", "name,source|day", "rows")]
    assert means["panel"]["type"] == "timeseries"
    assert [c["selector"] for c in means["target"]["columns"] if c["type"] == "timestamp"] == ["bucket"]
    assert "score_mean" in [c["selector"] for c in means["target"]["columns"]]
    labels = by_query[("/v1/annotations/metrics", "name,label|", "rows")]
    assert labels["panel"]["type"] == "barchart"
    counts = by_query[("/v1/annotations/metrics", "source|day", "rows")]
    assert "count" in [c["selector"] for c in counts["target"]["columns"]]


# -------------------------------------------------------------------------------------- the URLs


def test_every_url_uses_only_spec_parameters(dashboard: dict[str, Any]) -> None:
    seen = 0
    for _, target in targets(dashboard):
        path, params = parameters(dashboard, target)
        names = [k for k, _ in params]
        values = dict(params)
        allowed = {"/v1/annotations/metrics": METRICS_PARAMS, "/v1/annotations/agreement": AGREEMENT_PARAMS}
        assert path in allowed, path
        assert set(names) <= allowed[path], set(names) - allowed[path]
        # Single-valued parameters appear once; the window is Grafana's, in epoch milliseconds.
        for name in set(names) - {"group_by", "name", "source", "exclude_name", "subject_id", "queue"}:
            assert names.count(name) == 1, name
        assert values["from"] == "${__from}"
        assert values["to"] == "${__to}"
        assert "${__from}" in target["url"]
        assert "${__to}" in target["url"]
        assert values["scope"] == "all"
        if path.endswith("/metrics"):
            group_by = [v for k, v in params if k == "group_by"]
            assert set(group_by) <= SPEC_GROUP_KEYS
            assert set(SPEC_GROUP_KEYS) == set(GROUP_KEYS)  # the SPEC's keys are the gateway's
            assert len(group_by) == len(set(group_by)) <= 4
            assert values.get("interval", "day") in SPEC_INTERVALS
        else:
            assert values["by"] in RATER_FIELDS
        seen += 1
    assert seen >= 4


def test_every_url_is_accepted_by_the_routes_openapi(
    dashboard: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = fake_settings(tmp_path_factory.mktemp("cfg"), admin_key="a" * 32, phx_only_key="b" * 32)
    openapi = create_app(settings, federation=FakeFederation([])).openapi()
    grafana = {"${__from}": str(epoch_ms(WINDOW_START)), "${__to}": str(epoch_ms(WINDOW_END))}
    for _, target in targets(dashboard):
        path, params = parameters(dashboard, target)
        declared = {p["name"]: p for p in openapi["paths"][path]["get"]["parameters"]}
        sent: dict[str, list[str]] = {}
        for name, value in params:
            sent.setdefault(name, []).append(grafana.get(value, value))
        for name, values in sent.items():
            assert name in declared, f"{path} declares no parameter {name!r}"
            schema = declared[name]["schema"]
            value: Any = values if schema.get("type") == "array" else values[0]
            if schema.get("type") != "array":
                assert len(values) == 1, name
            jsonschema.validate(value, schema, cls=jsonschema.Draft202012Validator)
        assert sent["from"][0].isdigit()  # Grafana's epoch milliseconds, which the route accepts


# ----------------------------------------------------------------------- columns the gateway answers


def generated_records() -> list[Any]:
    """Annotations of two names from both demo sources, HUMAN and LLM raters, labels and scores
    (some without either), spread over the window - and a few outside it."""
    records = []
    for i in range(60):
        when = WINDOW_START + timedelta(hours=11 * i)
        source = ("phoenix-local", "datadog-sim")[i % 2]
        provider = ProviderKind.PHOENIX if source == "phoenix-local" else ProviderKind.DATADOG
        for name in ("resolution", "helpfulness"):
            for annotator in (AnnotatorKind.HUMAN, AnnotatorKind.LLM):
                label = None if i % 7 == 0 else ("good", "bad", "escalated")[(i + len(name)) % 3]
                score = None if i % 5 == 0 else (i % 10) / 10
                annotation = make_annotation(
                    source,
                    f"sess-{i % 12}",
                    name=name,
                    updated_at=when,
                    label=label if name == "resolution" else None,
                    score=score,
                    provider=provider,
                    annotator=annotator,
                )
                records.append(record_of(annotation))
    return records


def answer_of(dashboard: dict[str, Any], target: dict[str, Any]) -> list[dict[str, Any]]:
    """What the gateway's aggregation answers under the target's root selector, for the URL's
    parameters over a Grafana window (``${__from}``/``${__to}`` as epoch milliseconds)."""
    path, params = parameters(dashboard, target)
    values = dict(params)
    start = datetime.fromtimestamp(epoch_ms(WINDOW_START) / 1000, UTC)
    end = datetime.fromtimestamp(epoch_ms(WINDOW_END) / 1000, UTC)
    spec = MetricsSpec(
        group_by=tuple(v for k, v in params if k == "group_by"),  # type: ignore[arg-type]
        interval=values.get("interval"),  # type: ignore[arg-type]
        time_field=values.get("time_field", "updated_at"),  # type: ignore[arg-type]
        start=start,
        end=end,
    )
    records = generated_records()
    if target["root_selector"] == "sources":
        return [
            SourceStatusModel(
                source=s, provider=p, status="ok", count=1, cached=False, stale=False, elapsed_ms=1.0
            ).model_dump()
            for s, p in (("phoenix-local", "phoenix"), ("datadog-sim", "datadog"))
        ]
    if path.endswith("/agreement"):
        agreement = AgreementAggregator(values["by"])  # type: ignore[arg-type]
        window = spec.window()
        agreement.add(r for r in records if window is None or window(r))
        return agreement.results()
    metrics = MetricsAggregator(spec)
    metrics.add(records)
    rows = metrics.rows()
    assert rows
    for row in rows:
        assert set(row) == SPEC_ROW_FIELDS | set(spec.group_by)  # the SPEC §8 row, exactly
    return rows


def field_of(item: dict[str, Any], selector: str) -> Any:
    value: Any = item
    for part in selector.split("."):
        assert isinstance(value, dict), (selector, value)
        assert part in value, f"{selector!r} is not a field of {sorted(value)}"
        value = value[part]
        if value is None:
            return None
    return value


def test_every_column_is_a_field_of_the_answer(dashboard: dict[str, Any]) -> None:
    for panel, target in targets(dashboard):
        answered = answer_of(dashboard, target)
        assert answered, panel["title"]
        for column in target["columns"]:
            selector, kind = column["selector"], column["type"]
            if target["root_selector"] == "sources" and "." in selector:
                # A nested field of the problem object: its parent must be a sources[] field.
                assert selector.split(".")[0] in SourceStatusModel.model_fields
                continue
            values = [field_of(item, selector) for item in answered]
            present = [v for v in values if v is not None]
            if kind == "timestamp":
                assert len(present) == len(values), f"{panel['title']}: {selector} is null (no interval?)"
                for value in present:
                    assert datetime.fromisoformat(value).tzinfo is not None
            elif kind == "number":
                assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in present), selector
            else:
                assert all(isinstance(v, str | bool) for v in present), (selector, present[:3])


def test_the_mean_score_panel_has_one_series_per_name_and_source(dashboard: dict[str, Any]) -> None:
    """What panel 1 draws: the rows partitioned by name and source give four series with scores."""
    (panel,) = [p for p in dashboard["panels"] if p["id"] == 1]
    (target,) = panel["targets"]
    rows = answer_of(dashboard, target)
    (partition,) = [t for t in panel["transformations"] if t["id"] == "partitionByValues"]
    series = {tuple(row[f] for f in partition["options"]["fields"]) for row in rows}
    assert series == {
        (name, source)
        for name in ("helpfulness", "resolution")
        for source in ("datadog-sim", "phoenix-local")
    }
    assert all(row["bucket"].endswith("T00:00:00Z") for row in rows)  # daily UTC buckets


def test_transformations_name_only_the_columns_read(dashboard: dict[str, Any]) -> None:
    for panel in dashboard["panels"]:
        texts = {c["text"] for t in panel["targets"] for c in t["columns"]}
        for transformation in panel.get("transformations", []):
            options = transformation["options"]
            named: list[str] = list(options.get("fields", []))
            named += [options[k] for k in ("rowField", "columnField", "valueField") if k in options]
            named += [f["fieldName"] for f in options.get("filters", [])]
            assert named, transformation
            assert set(named) <= texts, (panel["title"], set(named) - texts)
