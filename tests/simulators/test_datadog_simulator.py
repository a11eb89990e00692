"""The Datadog simulator against Datadog's own contract and Datadog's own Python client.

Two judges, both over real HTTP against the simulator served by the ``datadog_sim`` fixture:

- the official OpenAPI fragment (``tests/fixtures/contracts/datadog/``), through openapi-core:
  every request we send and every answer we get is validated against it. Two documented
  deviations are applied on purpose (SPEC §1): Datadog answers ``application/vnd.api+json`` where
  the fragment says ``application/json``, and ``LLMObsAnnotationItem.label_values`` is declared an
  object but comes back as an array — the test that pins that down uses the unpatched fragment;
- ``datadog-api-client`` 2.62 (unstable operations enabled), which must build its typed models
  from every answer.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ApiException
from datadog_api_client.v2.api.agent_observability_api import AgentObservabilityApi
from datadog_api_client.v2.model.llm_obs_annotation_label_value import LLMObsAnnotationLabelValue
from datadog_api_client.v2.model.llm_obs_annotation_queue_data_attributes_request import (
    LLMObsAnnotationQueueDataAttributesRequest,
)
from datadog_api_client.v2.model.llm_obs_annotation_queue_data_request import LLMObsAnnotationQueueDataRequest
from datadog_api_client.v2.model.llm_obs_annotation_queue_interactions_data_attributes_request import (
    LLMObsAnnotationQueueInteractionsDataAttributesRequest,
)
from datadog_api_client.v2.model.llm_obs_annotation_queue_interactions_data_request import (
    LLMObsAnnotationQueueInteractionsDataRequest,
)
from datadog_api_client.v2.model.llm_obs_annotation_queue_interactions_request import (
    LLMObsAnnotationQueueInteractionsRequest,
)
from datadog_api_client.v2.model.llm_obs_annotation_queue_interactions_type import (
    LLMObsAnnotationQueueInteractionsType,
)
from datadog_api_client.v2.model.llm_obs_annotation_queue_label_schema_update_attributes import (
    LLMObsAnnotationQueueLabelSchemaUpdateAttributes,
)
from datadog_api_client.v2.model.llm_obs_annotation_queue_label_schema_update_data import (
    LLMObsAnnotationQueueLabelSchemaUpdateData,
)
from datadog_api_client.v2.model.llm_obs_annotation_queue_label_schema_update_request import (
    LLMObsAnnotationQueueLabelSchemaUpdateRequest,
)
from datadog_api_client.v2.model.llm_obs_annotation_queue_request import LLMObsAnnotationQueueRequest
from datadog_api_client.v2.model.llm_obs_annotation_queue_type import LLMObsAnnotationQueueType
from datadog_api_client.v2.model.llm_obs_annotation_schema import LLMObsAnnotationSchema
from datadog_api_client.v2.model.llm_obs_annotations_data_attributes_request import (
    LLMObsAnnotationsDataAttributesRequest,
)
from datadog_api_client.v2.model.llm_obs_annotations_data_request import LLMObsAnnotationsDataRequest
from datadog_api_client.v2.model.llm_obs_annotations_request import LLMObsAnnotationsRequest
from datadog_api_client.v2.model.llm_obs_annotations_type import LLMObsAnnotationsType
from datadog_api_client.v2.model.llm_obs_label_schema import LLMObsLabelSchema
from datadog_api_client.v2.model.llm_obs_label_schema_type import LLMObsLabelSchemaType
from datadog_api_client.v2.model.llm_obs_trace_interaction_item import LLMObsTraceInteractionItem
from datadog_api_client.v2.model.llm_obs_trace_interaction_type import LLMObsTraceInteractionType
from datadog_api_client.v2.model.llm_obs_upsert_annotation_item import LLMObsUpsertAnnotationItem
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from annotation_gateway.simulators.datadog import (
    JSONAPI_CONTENT_TYPE,
    RateLimit,
    SimulatorConfig,
    Switches,
    build_app,
    make_config,
    start_in_thread,
)
from annotation_gateway.simulators.datadog.store import SimApiError, user_id_for_app_key
from tests.plugins.datadog import DatadogSimulator

# We enable the preview operations on purpose; the client warns on every call.
pytestmark = pytest.mark.filterwarnings("ignore:Using unstable operation:UserWarning")

CONTRACTS = Path(__file__).resolve().parents[1] / "fixtures" / "contracts" / "datadog"
API = "/api/v2/llm-obs/v1"
ZERO = "0001-01-01T00:00:00Z"

# --- the contract judge -----------------------------------------------------------------------


def _load_fragment() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CONTRACTS / "llm-obs-annotations.openapi.yaml").read_text())
    return loaded


def _as_sent_fragment() -> dict[str, Any]:
    """The fragment with the one measured deviation: label_values may be the array Datadog sends."""
    spec = _load_fragment()
    schemas = spec["components"]["schemas"]
    declared = schemas["LLMObsAnnotationItem"]["properties"]["label_values"]
    as_sent = copy.deepcopy(schemas["LLMObsAnnotationItemResponse"]["properties"]["label_values"])
    schemas["LLMObsAnnotationItem"]["properties"]["label_values"] = {"oneOf": [declared, as_sent]}
    return spec


FRAGMENT = OpenAPI.from_dict(_load_fragment())
AS_SENT = OpenAPI.from_dict(_as_sent_fragment())


class _OpenAPIRequest:
    """An httpx request as openapi-core's Request protocol."""

    def __init__(self, request: httpx.Request) -> None:
        self._request = request
        query = httpx.QueryParams(request.url.query)
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(query.multi_items())),
            header=Headers(list(request.headers.items())),
            cookie=ImmutableMultiDict(),
        )

    @property
    def host_url(self) -> str:
        return f"{self._request.url.scheme}://{self._request.url.netloc.decode()}"

    @property
    def path(self) -> str:
        return self._request.url.path

    @property
    def method(self) -> str:
        return self._request.method.lower()

    @property
    def body(self) -> bytes | None:
        return self._request.content or None

    @property
    def content_type(self) -> str:
        return self._request.headers.get("content-type", "")


class _OpenAPIResponse:
    """An httpx response as openapi-core's Response protocol.

    The fragment declares ``application/json``; Datadog (and the simulator, asserted separately)
    sends ``application/vnd.api+json`` — the same JSON document.
    """

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status_code(self) -> int:
        return self._response.status_code

    @property
    def content_type(self) -> str:
        return "application/json"

    @property
    def headers(self) -> Headers:
        return Headers(list(self._response.headers.items()))

    @property
    def data(self) -> bytes | None:
        return self._response.content or None


def checked(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    params: list[tuple[str, str]] | None = None,
    json: Any = None,
    spec: OpenAPI = AS_SENT,
    valid_request: bool = True,
) -> httpx.Response:
    """Send a request and validate it and its answer against the fragment."""
    response = client.request(method, path, params=params, json=json)
    request = _OpenAPIRequest(response.request)
    if valid_request:
        spec.validate_request(request)
    if response.status_code != 204:
        assert response.headers["content-type"] == JSONAPI_CONTENT_TYPE
    spec.validate_response(request, _OpenAPIResponse(response))
    return response


@pytest.fixture
def http(datadog_sim: DatadogSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=datadog_sim.base_url, headers=datadog_sim.headers, timeout=10) as client:
        yield client


# --- the client judge -------------------------------------------------------------------------


@pytest.fixture
def dd_api(datadog_sim: DatadogSimulator) -> Iterator[AgentObservabilityApi]:
    yield from _official_client(datadog_sim)


def _official_client(sim: DatadogSimulator, *, retry: bool = False) -> Iterator[AgentObservabilityApi]:
    configuration = Configuration(host=sim.base_url)
    configuration.api_key["apiKeyAuth"] = sim.api_key
    configuration.api_key["appKeyAuth"] = sim.app_key
    configuration.enable_retry = retry
    for operation in list(configuration.unstable_operations.values):
        if "llm_obs_annot" in operation:
            # The client's __setitem__ wants the name without its "v2." prefix.
            configuration.unstable_operations[operation.split(".", 1)[1]] = True
    with ApiClient(configuration) as client:
        yield AgentObservabilityApi(client)


# --- data -------------------------------------------------------------------------------------

LABELS: list[dict[str, Any]] = [
    {"name": "quality", "type": "score", "min": 0, "max": 5, "is_integer": True, "has_reasoning": True},
    {"name": "topic", "type": "categorical", "values": ["billing", "bug", "other"]},
    {"name": "resolved", "type": "boolean", "has_assessment": True, "is_assessment": True},
    {"name": "feedback", "type": "text"},
]


def _create_queue(
    http: httpx.Client, name: str = "support", labels: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {"name": name, "project_id": "proj-1", "description": "d"}
    if labels is not None:
        attributes["annotation_schema"] = {"label_schemas": labels}
    response = checked(
        http, "POST", f"{API}/annotation-queues", json={"data": {"type": "queues", "attributes": attributes}}
    )
    assert response.status_code == 201
    data: dict[str, Any] = response.json()["data"]
    return data


def _label_ids(queue: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["id"] for s in queue["attributes"]["annotation_schema"]["label_schemas"]}


def _add(http: httpx.Client, queue_id: str, *items: tuple[str, str]) -> list[dict[str, Any]]:
    body = {
        "data": {
            "type": "interactions",
            "attributes": {"interactions": [{"type": t, "content_id": c} for t, c in items]},
        }
    }
    response = checked(http, "POST", f"{API}/annotation-queues/{queue_id}/interactions", json=body)
    assert response.status_code == 201
    result: list[dict[str, Any]] = response.json()["data"]["attributes"]["interactions"]
    return result


def _upsert(http: httpx.Client, queue_id: str, items: list[dict[str, Any]], **kwargs: Any) -> httpx.Response:
    body = {"data": {"type": "annotations", "attributes": {"annotations": items}}}
    return checked(http, "POST", f"{API}/annotation-queues/{queue_id}/annotations", json=body, **kwargs)


def _read(
    http: httpx.Client, *content_ids: str, offset: int = 0, limit: int = 100, spec: OpenAPI = AS_SENT
) -> dict[str, Any]:
    params = [("contentIds", c) for c in content_ids] + [("offset", str(offset)), ("limit", str(limit))]
    response = checked(http, "GET", f"{API}/annotated-interactions", params=params, spec=spec)
    assert response.status_code == 200, response.text
    attributes: dict[str, Any] = response.json()["data"]["attributes"]
    return attributes


SEED: dict[str, Any] = {
    "queues": [
        {
            "name": "support",
            "project_id": "support-bot",
            "label_schemas": LABELS,
            "interactions": [
                {
                    "type": "session",
                    "content_id": "sess-1",
                    "created_at": "2026-01-02T03:04:05Z",
                    "annotations": [
                        {
                            "user": "alice",
                            "created_at": "2026-01-02T04:00:00Z",
                            "label_values": [
                                {"label": "quality", "value": 4, "reasoning": "concise"},
                                {"label": "topic", "value": ["billing", "bug"]},
                                {"label": "resolved", "value": True, "assessment": "pass"},
                                {"label": "feedback", "value": ""},
                            ],
                        },
                        {"user": "bob", "label_values": {"quality": 2, "topic": "other"}},
                    ],
                },
                {"type": "trace", "content_id": "trace-1"},
            ],
        },
        {
            "name": "second-look",
            "label_schemas": [{"name": "quality", "type": "score"}],
            "interactions": [
                {
                    "type": "session",
                    "content_id": "sess-1",
                    "annotations": [{"user": "carol", "label_values": {"quality": 1.5}}],
                }
            ],
        },
    ]
}


# --- every operation, per the contract --------------------------------------------------------


def test_every_operation_answers_per_the_contract(http: httpx.Client) -> None:
    queue = _create_queue(http, labels=LABELS)
    queue_id = queue["id"]
    labels = _label_ids(queue)
    assert set(labels) == {"quality", "topic", "resolved", "feedback"}

    listed = checked(http, "GET", f"{API}/annotation-queues").json()["data"]
    assert [q["id"] for q in listed] == [queue_id]
    assert (
        checked(http, "GET", f"{API}/annotation-queues", params=[("projectId", "other")]).json()["data"] == []
    )
    by_ids = checked(
        http, "GET", f"{API}/annotation-queues", params=[("queueIds", queue_id), ("queueIds", "nope")]
    )
    assert [q["id"] for q in by_ids.json()["data"]] == [queue_id]

    patched = checked(
        http,
        "PATCH",
        f"{API}/annotation-queues/{queue_id}",
        json={
            "data": {
                "type": "queues",
                "attributes": {"name": "support-renamed", "reviewer_emails": ["r@example.com"]},
            }
        },
    )
    assert patched.json()["data"]["attributes"]["name"] == "support-renamed"

    schema = checked(http, "GET", f"{API}/annotation-queues/{queue_id}/label-schema").json()["data"]
    assert schema["id"] == queue_id
    assert schema["type"] == "queues"
    assert [s["name"] for s in schema["attributes"]["annotation_schema"]["label_schemas"]] == [
        label["name"] for label in LABELS
    ]

    replaced = checked(
        http,
        "PUT",
        f"{API}/annotation-queues/{queue_id}/label-schema",
        json={
            "data": {
                "type": "queues",
                "attributes": {
                    "annotation_schema": {"label_schemas": [*LABELS, {"name": "urgent", "type": "boolean"}]}
                },
            }
        },
    ).json()["data"]["attributes"]["annotation_schema"]["label_schemas"]
    # Unchanged labels keep their ids: annotations reference labels by id.
    assert {s["name"]: s["id"] for s in replaced if s["name"] in labels} == labels

    added = _add(http, queue_id, ("trace", "t-1"), ("session", "s-1"), ("experiment_trace", "e-1"))
    assert [(i["type"], i["content_id"], i["already_existed"]) for i in added] == [
        ("trace", "t-1", False),
        ("session", "s-1", False),
        ("experiment_trace", "e-1", False),
    ]
    again = _add(http, queue_id, ("trace", "t-1"))
    assert again[0]["already_existed"] is True
    assert again[0]["id"] == added[0]["id"]
    block = [
        {"type": "markdown", "content": "## Triage"},
        {"type": "frontend", "code": "<b>x</b>", "label": "L"},
    ]
    shown = checked(
        http,
        "POST",
        f"{API}/annotation-queues/{queue_id}/interactions",
        json={
            "data": {
                "type": "interactions",
                "attributes": {"interactions": [{"type": "display_block", "display_block": block}]},
            }
        },
    ).json()["data"]["attributes"]["interactions"][0]
    assert shown["type"] == "display_block"
    assert len(shown["content_id"]) == 64
    assert shown["display_block"] == block

    upserted = _upsert(
        http,
        queue_id,
        [
            {
                "interaction_id": added[0]["id"],
                "label_values": [
                    {"label_schema_id": labels["quality"], "value": 4, "reasoning": "good"},
                    {"label_schema_id": labels["topic"], "value": ["billing", "bug"]},
                    {"label_schema_id": labels["resolved"], "value": True, "assessment": "pass"},
                    {"label_schema_id": labels["feedback"], "value": "thanks"},
                ],
            },
            {
                "interaction_id": shown["id"],
                "label_values": [{"label_schema_id": labels["topic"], "value": "other"}],
            },
            {
                "interaction_id": "not-in-this-queue",
                "label_values": [{"label_schema_id": labels["quality"], "value": 1}],
            },
        ],
    ).json()["data"]["attributes"]
    assert len(upserted["annotations"]) == 2
    assert upserted["errors"] == [{"interaction_id": "not-in-this-queue", "error": "interaction not found"}]
    first = upserted["annotations"][0]
    assert [(v["name_when_saved"], v["type"], v["value"]) for v in first["label_values"]] == [
        ("quality", "score", 4),
        ("topic", "categorical", ["billing", "bug"]),
        ("resolved", "boolean", True),
        ("feedback", "text", "thanks"),
    ]
    # A single categorical choice is answered as a list, as Datadog does.
    assert upserted["annotations"][1]["label_values"][0]["value"] == ["other"]

    read = _read(http, "t-1", shown["content_id"], "unknown")
    assert read["total_count"] == 2
    by_type = {i["type"]: i for i in read["annotated_interactions"]}
    assert by_type["trace"]["queue_id"] == queue_id
    assert by_type["trace"]["queue_name"] == "support-renamed"
    assert by_type["trace"]["annotations"][0]["id"] == first["id"]
    assert by_type["display_block"]["display_block"] == block

    per_queue = checked(http, "GET", f"{API}/annotation-queues/{queue_id}/annotated-interactions").json()[
        "data"
    ]
    assert per_queue["type"] == "annotated_interactions"
    assert len(per_queue["attributes"]["annotated_interactions"]) == 4
    one = checked(
        http,
        "GET",
        f"{API}/annotation-queues/{queue_id}/annotated-interactions/{added[0]['id']}",
        params=[("limit", "5")],
    )
    assert one.json()["data"]["attributes"]["interaction_type"] == "trace"
    assert one.json()["data"]["attributes"]["events"] == []

    deleted = checked(
        http,
        "POST",
        f"{API}/annotation-queues/{queue_id}/annotations/delete",
        json={"data": {"type": "annotations", "attributes": {"annotation_ids": [first["id"], "missing"]}}},
    ).json()["data"]["attributes"]
    assert deleted == {
        "annotation_ids": [first["id"]],
        "errors": [{"annotation_id": "missing", "error": "annotation not found"}],
    }
    assert _read(http, "t-1")["annotated_interactions"][0]["annotations"] == []

    gone = checked(
        http,
        "POST",
        f"{API}/annotation-queues/{queue_id}/interactions/delete",
        json={"data": {"type": "interactions", "attributes": {"interaction_ids": [added[0]["id"]]}}},
    )
    assert gone.status_code == 204
    assert _read(http, "t-1")["total_count"] == 0

    assert checked(http, "DELETE", f"{API}/annotation-queues/{queue_id}").status_code == 204
    missing = checked(http, "GET", f"{API}/annotation-queues/{queue_id}/label-schema")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["status"] == "404"


def test_label_values_come_as_an_array_although_the_fragment_declares_an_object(
    datadog_sim: DatadogSimulator, http: httpx.Client, dd_api: AgentObservabilityApi
) -> None:
    datadog_sim.seed(SEED)
    params = [("contentIds", "sess-1")]
    as_sent = http.get(f"{API}/annotated-interactions", params=params)
    with pytest.raises(Exception, match="is not of type 'object'"):
        FRAGMENT.validate_response(_OpenAPIRequest(as_sent.request), _OpenAPIResponse(as_sent))
    # The client still builds the response: it keeps the list and marks the item unparsed.
    array_form = dd_api.get_llm_obs_annotated_interactions_by_trace_i_ds(content_ids=["sess-1"])
    lists = [a.label_values for i in array_form.data.attributes.annotated_interactions for a in i.annotations]
    assert all(isinstance(values, list) for values in lists)
    assert len(lists) == 3

    datadog_sim.configure(label_values="object")
    legacy = checked(http, "GET", f"{API}/annotated-interactions", params=params, spec=FRAGMENT).json()
    values = [
        a["label_values"]
        for i in legacy["data"]["attributes"]["annotated_interactions"]
        for a in i["annotations"]
    ]
    assert {"quality": 4, "topic": ["billing", "bug"], "resolved": True, "feedback": ""} in values
    # The legacy form is what the client's model declares: parsed with nothing left unparsed.
    object_form = dd_api.get_llm_obs_annotated_interactions_by_trace_i_ds(content_ids=["sess-1"])
    assert not object_form._unparsed
    for interaction in object_form.data.attributes.annotated_interactions:
        assert not interaction._unparsed
        assert isinstance(interaction.created_at, datetime)
        for annotation in interaction.annotations:
            assert not annotation._unparsed
            assert isinstance(annotation.label_values, dict)


# --- the official client as consumer ---------------------------------------------------------


def test_official_client_drives_every_operation(
    datadog_sim: DatadogSimulator, dd_api: AgentObservabilityApi
) -> None:
    created = dd_api.create_llm_obs_annotation_queue(
        body=LLMObsAnnotationQueueRequest(
            data=LLMObsAnnotationQueueDataRequest(
                type=LLMObsAnnotationQueueType.QUEUES,
                attributes=LLMObsAnnotationQueueDataAttributesRequest(
                    name="client-queue",
                    project_id="proj",
                    annotation_schema=LLMObsAnnotationSchema(
                        label_schemas=[
                            LLMObsLabelSchema(
                                name="quality", type=LLMObsLabelSchemaType.SCORE, min=0.0, max=5.0
                            ),
                            LLMObsLabelSchema(
                                name="topic", type=LLMObsLabelSchemaType.CATEGORICAL, values=["a", "b"]
                            ),
                        ]
                    ),
                ),
            )
        )
    )
    queue_id = created.data.id
    assert created.data.attributes.created_by == user_id_for_app_key(datadog_sim.app_key)
    assert isinstance(created.data.attributes.created_at, datetime)

    schema = dd_api.update_llm_obs_annotation_queue_label_schema(
        queue_id=queue_id,
        body=LLMObsAnnotationQueueLabelSchemaUpdateRequest(
            data=LLMObsAnnotationQueueLabelSchemaUpdateData(
                type=LLMObsAnnotationQueueType.QUEUES,
                attributes=LLMObsAnnotationQueueLabelSchemaUpdateAttributes(
                    annotation_schema=LLMObsAnnotationSchema(
                        label_schemas=[
                            LLMObsLabelSchema(
                                name="quality", type=LLMObsLabelSchemaType.SCORE, min=0.0, max=5.0
                            ),
                            LLMObsLabelSchema(
                                name="topic", type=LLMObsLabelSchemaType.CATEGORICAL, values=["a", "b"]
                            ),
                            LLMObsLabelSchema(name="ok", type=LLMObsLabelSchemaType.BOOLEAN),
                        ]
                    )
                ),
            )
        ),
    )
    labels = {s.name: s.id for s in schema.data.attributes.annotation_schema.label_schemas}
    fetched = dd_api.get_llm_obs_annotation_queue_label_schema(queue_id=queue_id)
    assert {s.name: s.id for s in fetched.data.attributes.annotation_schema.label_schemas} == labels

    added = dd_api.create_llm_obs_annotation_queue_interactions(
        queue_id=queue_id,
        body=LLMObsAnnotationQueueInteractionsRequest(
            data=LLMObsAnnotationQueueInteractionsDataRequest(
                type=LLMObsAnnotationQueueInteractionsType.INTERACTIONS,
                attributes=LLMObsAnnotationQueueInteractionsDataAttributesRequest(
                    interactions=[
                        LLMObsTraceInteractionItem(
                            type=LLMObsTraceInteractionType.TRACE, content_id="trace b,c"
                        )
                    ]
                ),
            )
        ),
    )
    interaction = added.data.attributes.interactions[0]
    assert interaction.content_id == "trace b,c"
    assert interaction.already_existed is False

    upserted = dd_api.upsert_llm_obs_annotations(
        queue_id=queue_id,
        body=LLMObsAnnotationsRequest(
            data=LLMObsAnnotationsDataRequest(
                type=LLMObsAnnotationsType.ANNOTATIONS,
                attributes=LLMObsAnnotationsDataAttributesRequest(
                    annotations=[
                        LLMObsUpsertAnnotationItem(
                            interaction_id=interaction.id,
                            label_values=[
                                LLMObsAnnotationLabelValue(label_schema_id=labels["quality"], value=3.0),
                                LLMObsAnnotationLabelValue(label_schema_id=labels["topic"], value=["a", "b"]),
                                LLMObsAnnotationLabelValue(label_schema_id=labels["ok"], value=False),
                            ],
                        )
                    ]
                ),
            )
        ),
    )
    written = upserted.data.attributes.annotations[0]
    assert not upserted._unparsed
    assert [(v.name_when_saved, str(v.type), v.value) for v in written.label_values] == [
        ("quality", "score", 3.0),
        ("topic", "categorical", ["a", "b"]),
        ("ok", "boolean", False),
    ]

    # contentIds is a repeated key: the comma stays inside the one id.
    read = dd_api.get_llm_obs_annotated_interactions_by_trace_i_ds(
        content_ids=["trace b,c", "other"], offset=0, limit=10
    )
    assert str(read.data.type) == "annotated_interactions_by_trace"
    assert read.data.attributes.total_count == 1
    item = read.data.attributes.annotated_interactions[0]
    assert (item.content_id, item.queue_id, item.queue_name, item.can_annotate) == (
        "trace b,c",
        queue_id,
        "client-queue",
        True,
    )
    assert item.annotations[0].created_by == user_id_for_app_key(datadog_sim.app_key)
    sent = [r for r in datadog_sim.requests if r.path.endswith("/annotated-interactions")][-1]
    assert ("contentIds", "trace b,c") in sent.query
    assert ("contentIds", "other") in sent.query

    queues = dd_api.list_llm_obs_annotation_queues(queue_ids=[queue_id])
    assert [q.id for q in queues.data] == [queue_id]
    per_queue = dd_api.get_llm_obs_annotated_interactions(queue_id=queue_id)
    assert per_queue.data.attributes.annotated_interactions[0].id == interaction.id
    single = dd_api.get_llm_obs_annotated_interaction(queue_id=queue_id, interaction_id=interaction.id)
    assert single.data.attributes.events == []
    dd_api.delete_llm_obs_annotation_queue(queue_id=queue_id)
    with pytest.raises(ApiException) as missing:
        dd_api.get_llm_obs_annotation_queue_label_schema(queue_id=queue_id)
    assert missing.value.status == 404


def test_official_client_waits_out_a_rate_limit(datadog_sim: DatadogSimulator) -> None:
    datadog_sim.seed(SEED)
    datadog_sim.configure(rate_limit={"limit": 1, "period_s": 1})
    for api in _official_client(datadog_sim, retry=True):
        api.get_llm_obs_annotated_interactions_by_trace_i_ds(content_ids=["sess-1"])
        started = time.monotonic()
        # The client sleeps X-RateLimit-Reset seconds and retries: the headers are what it expects.
        again = api.get_llm_obs_annotated_interactions_by_trace_i_ds(content_ids=["sess-1"])
        assert again.data.attributes.total_count == 2
        assert time.monotonic() - started >= 0.5
    assert [r.status for r in datadog_sim.requests] == [200, 429, 200]


# --- validation answers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("", "contentIds"),
        ("contentIds=", "contentIds"),
        ("contentIds=&contentIds=", "contentIds"),
        ("contentIds=a&offset=-1", "offset"),
        ("contentIds=a&offset=x", "offset"),
        ("contentIds=a&offset=1.5", "offset"),
        ("contentIds=a&limit=0", "limit"),
        ("contentIds=a&limit=-3", "limit"),
        ("contentIds=a&limit=ten", "limit"),
        ("contentIds=a&limit=2147483648", "limit"),
    ],
)
def test_invalid_reads_answer_400_naming_the_parameter(
    http: httpx.Client, query: str, parameter: str
) -> None:
    response = http.get(f"{API}/annotated-interactions?{query}")
    assert response.status_code == 400
    assert response.headers["content-type"] == JSONAPI_CONTENT_TYPE
    AS_SENT.validate_response(_OpenAPIRequest(response.request), _OpenAPIResponse(response))
    [error] = response.json()["errors"]
    assert error["status"] == "400"
    assert error["title"] == "Bad Request"
    assert error["detail"]
    assert error["source"] == {"parameter": parameter}


def _schema_queue(datadog_sim: DatadogSimulator) -> tuple[str, dict[str, str], str]:
    made = datadog_sim.seed(
        {
            "queues": [
                {
                    "name": "strict",
                    "label_schemas": [
                        {"name": "quality", "type": "score", "min": 1, "max": 5, "is_integer": True},
                        {"name": "topic", "type": "categorical", "values": ["a", "b"]},
                        {"name": "ok", "type": "boolean"},
                        {"name": "note", "type": "text", "is_required": True},
                        {"name": "graded", "type": "score", "has_assessment": True, "has_reasoning": True},
                    ],
                    "interactions": [{"type": "trace", "content_id": "t"}],
                }
            ]
        }
    )
    queue = made["queues"][0]
    interaction = datadog_sim.state.store.queue_interactions(queue["id"])[0].id
    return queue["id"], queue["label_schemas"], interaction


@pytest.mark.parametrize(
    ("label", "entry", "problem"),
    [
        ("quality", {"value": 6}, "outside"),
        ("quality", {"value": 0}, "outside"),
        ("quality", {"value": 2.5}, "integer"),
        ("quality", {"value": "3"}, "number"),
        ("quality", {"value": True}, "number"),
        ("quality", {"value": 3, "assessment": "pass"}, "no assessment"),
        ("quality", {"value": 3, "reasoning": "why"}, "no reasoning"),
        ("graded", {"value": 3, "assessment": "maybe"}, "pass or fail"),
        ("topic", {"value": "c"}, "not one of"),
        ("topic", {"value": ["a", "a"]}, "unique"),
        ("topic", {"value": 1}, "string"),
        ("ok", {"value": "true"}, "true or false"),
        ("note", {"value": 5}, "non-empty string"),
        ("note", {"value": ""}, "required"),
    ],
)
def test_upserts_are_validated_against_the_label_schema(
    datadog_sim: DatadogSimulator, http: httpx.Client, label: str, entry: dict[str, Any], problem: str
) -> None:
    queue_id, labels, interaction = _schema_queue(datadog_sim)
    values = [{"label_schema_id": labels["note"], "value": "n"}] if label != "note" else []
    values.append({"label_schema_id": labels[label], **entry})
    response = _upsert(
        http, queue_id, [{"interaction_id": interaction, "label_values": values}], valid_request=False
    )
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert problem in error["detail"]
    assert error["source"]["pointer"].startswith("/data/attributes/annotations/0/label_values/")
    assert datadog_sim.state.store.annotations_of(interaction) == []


def test_upsert_rejects_unknown_labels_missing_required_ones_and_bad_documents(
    datadog_sim: DatadogSimulator, http: httpx.Client
) -> None:
    queue_id, labels, interaction = _schema_queue(datadog_sim)
    unknown = _upsert(
        http,
        queue_id,
        [{"interaction_id": interaction, "label_values": [{"label_schema_id": "nope", "value": 1}]}],
    )
    assert unknown.status_code == 400
    assert "unknown label_schema_id" in unknown.json()["errors"][0]["detail"]
    missing = _upsert(
        http,
        queue_id,
        [{"interaction_id": interaction, "label_values": [{"label_schema_id": labels["ok"], "value": True}]}],
    )
    assert missing.status_code == 400
    assert "required label 'note'" in missing.json()["errors"][0]["detail"]
    empty = _upsert(
        http, queue_id, [{"interaction_id": interaction, "label_values": []}], valid_request=False
    )
    assert empty.json()["errors"][0]["source"]["pointer"] == "/data/attributes/annotations/0/label_values"
    wrong_type = checked(
        http,
        "POST",
        f"{API}/annotation-queues/{queue_id}/annotations",
        json={"data": {"type": "queues", "attributes": {"annotations": []}}},
        valid_request=False,
    )
    assert wrong_type.status_code == 400
    assert wrong_type.json()["errors"][0]["source"] == {"pointer": "/data/type"}
    not_json = http.post(
        f"{API}/annotation-queues/{queue_id}/annotations",
        content=b"{",
        headers={"content-type": "application/json"},
    )
    assert not_json.status_code == 400
    no_queue = _upsert(
        http,
        "no-such-queue",
        [{"interaction_id": interaction, "label_values": [{"label_schema_id": "x", "value": 1}]}],
    )
    assert no_queue.status_code == 404


def test_label_schema_rules(datadog_sim: DatadogSimulator, http: httpx.Client) -> None:
    queue_id = _create_queue(http)["id"]
    bad = [
        ([{"name": "has space", "type": "score"}], "/0/name"),
        ([{"name": "a", "type": "score"}, {"name": "a", "type": "text"}], "/1/name"),
        ([{"name": "a", "type": "rating"}], "/0/type"),
        ([{"name": "a", "type": "categorical"}], "/0/values"),
        ([{"name": "a", "type": "categorical", "values": ["x", ""]}], "/0/values"),
        ([{"name": "a", "type": "score", "min": 5, "max": 1}], "/0/min"),
        ([{"name": "a", "type": "boolean", "is_assessment": True}], "/0/is_assessment"),
    ]
    for labels, where in bad:
        response = checked(
            http,
            "PUT",
            f"{API}/annotation-queues/{queue_id}/label-schema",
            json={"data": {"type": "queues", "attributes": {"annotation_schema": {"label_schemas": labels}}}},
            valid_request=False,
        )
        assert response.status_code == 400, labels
        assert response.json()["errors"][0]["source"]["pointer"].endswith(where), labels
    assert datadog_sim.state.store.get_queue(queue_id).label_schemas == []


def test_one_annotation_per_interaction_and_user(datadog_sim: DatadogSimulator, http: httpx.Client) -> None:
    queue = _create_queue(http, labels=[{"name": "quality", "type": "score"}])
    [interaction] = _add(http, queue["id"], ("session", "s"))
    label = _label_ids(queue)["quality"]

    def upsert_as(app_key: str, value: float) -> dict[str, Any]:
        headers = {"DD-API-KEY": datadog_sim.api_key, "DD-APPLICATION-KEY": app_key}
        with httpx.Client(base_url=datadog_sim.base_url, headers=headers) as client:
            response = _upsert(
                client,
                queue["id"],
                [
                    {
                        "interaction_id": interaction["id"],
                        "label_values": [{"label_schema_id": label, "value": value}],
                    }
                ],
            )
        annotation: dict[str, Any] = response.json()["data"]["attributes"]["annotations"][0]
        return annotation

    first = upsert_as(datadog_sim.app_key, 1)
    second = upsert_as(datadog_sim.app_key, 2)
    assert second["id"] == first["id"]
    assert second["created_by"] == first["created_by"]
    assert second["label_values"][0]["value"] == 2
    assert read_annotations(http, "s") == [(first["id"], 2)]


def read_annotations(http: httpx.Client, content_id: str) -> list[tuple[str, Any]]:
    items = _read(http, content_id)["annotated_interactions"]
    return [(a["id"], a["label_values"][0]["value"]) for i in items for a in i["annotations"]]


def test_without_configured_keys_any_pair_is_accepted_and_the_app_key_is_the_user() -> None:
    running = start_in_thread(
        SimulatorConfig(
            seed={
                "queues": [
                    {
                        "name": "q",
                        "label_schemas": [{"name": "s", "type": "score"}],
                        "interactions": [{"type": "trace", "content_id": "t"}],
                    }
                ]
            }
        )
    )
    try:
        state = running.state
        queue = state.store.list_queues()[0]
        interaction = state.store.queue_interactions(queue.id)[0]
        label = queue.label_schemas[0]["id"]
        created_by = []
        for app_key in ("alice-key", "bob-key", "alice-key"):
            with httpx.Client(
                base_url=running.base_url, headers={"DD-API-KEY": "anything", "DD-APPLICATION-KEY": app_key}
            ) as client:
                response = _upsert(
                    client,
                    queue.id,
                    [
                        {
                            "interaction_id": interaction.id,
                            "label_values": [{"label_schema_id": label, "value": 1}],
                        }
                    ],
                )
                assert response.status_code == 200
                created_by.append(response.json()["data"]["attributes"]["annotations"][0]["created_by"])
        assert created_by[0] == created_by[2] == user_id_for_app_key("alice-key") != created_by[1]
        assert len(state.store.annotations_of(interaction.id)) == 2
        with httpx.Client(base_url=running.base_url) as client:
            for headers in ({}, {"DD-API-KEY": "k"}, {"DD-API-KEY": "", "DD-APPLICATION-KEY": "k"}):
                refused = client.get(f"{API}/annotation-queues", headers=headers)
                assert (refused.status_code, refused.json()) == (403, {"errors": ["Forbidden"]})
    finally:
        running.stop()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"DD-API-KEY": "wrong", "DD-APPLICATION-KEY": "sim-app-key-0123456789"},
        {"DD-API-KEY": "sim-api-key-0123456789", "DD-APPLICATION-KEY": "wrong"},
        {"DD-API-KEY": "sim-api-key-0123456789"},
    ],
)
def test_wrong_or_missing_keys_are_forbidden(datadog_sim: DatadogSimulator, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=datadog_sim.base_url, headers=headers) as client:
        response = client.get(f"{API}/annotated-interactions", params={"contentIds": "x"})
    assert response.status_code == 403
    assert response.headers["content-type"] == JSONAPI_CONTENT_TYPE
    assert response.json() == {"errors": ["Forbidden"]}


def test_official_client_sees_403_for_a_bad_key(datadog_sim: DatadogSimulator) -> None:
    configuration = Configuration(host=datadog_sim.base_url)
    configuration.api_key["apiKeyAuth"] = "wrong"
    configuration.api_key["appKeyAuth"] = datadog_sim.app_key
    configuration.unstable_operations["list_llm_obs_annotation_queues"] = True
    with ApiClient(configuration) as client, pytest.raises(ApiException) as refused:
        AgentObservabilityApi(client).list_llm_obs_annotation_queues()
    assert refused.value.status == 403
    assert refused.value.body == {"errors": ["Forbidden"]}


def test_unknown_paths_and_methods(http: httpx.Client) -> None:
    for path in (
        "/api/v2/llm-obs/v1/annotated-interaction",
        "/api/v1/validate",
        "/",
        f"{API}/annotation-queues/q/nope",
    ):
        response = http.get(path)
        assert (response.status_code, response.json()) == (404, {"errors": ["Not found"]}), path
    wrong = http.delete(f"{API}/annotated-interactions")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET"


def test_paging_over_interactions_is_stable_and_counts_every_queue(
    datadog_sim: DatadogSimulator, http: httpx.Client
) -> None:
    contents = [f"c-{n:03}" for n in range(40)]
    doc = {
        "queues": [
            {
                "name": f"q{q}",
                "label_schemas": [{"name": "s", "type": "score"}],
                "interactions": [
                    {
                        "type": "trace",
                        "content_id": c,
                        "annotations": [{"user": "u", "label_values": {"s": q}}],
                    }
                    for c in contents[q::2]
                ]
                + [
                    {
                        "type": "trace",
                        "content_id": "shared",
                        "annotations": [{"user": "u", "label_values": {"s": q}}],
                    }
                ],
            }
            for q in range(3)
        ]
    }
    datadog_sim.seed(doc)
    wanted = [*contents, "shared", "unknown"]
    total = _read(http, *wanted, limit=1)["total_count"]
    assert total == len(contents[0::2]) + len(contents[1::2]) + len(contents[2::2]) + 3
    seen: list[str] = []
    for offset in range(0, total, 7):
        page = _read(http, *wanted, offset=offset, limit=7)
        assert page["total_count"] == total
        seen += [i["id"] for i in page["annotated_interactions"]]
    assert len(seen) == len(set(seen)) == total
    assert _read(http, *wanted, offset=total)["annotated_interactions"] == []
    shared = _read(http, "shared")["annotated_interactions"]
    assert sorted(i["queue_name"] for i in shared) == ["q0", "q1", "q2"]


# --- switches ---------------------------------------------------------------------------------


def test_zero_time_and_missing_name_when_saved(datadog_sim: DatadogSimulator, http: httpx.Client) -> None:
    datadog_sim.seed(SEED)
    datadog_sim.configure(zero_time=True, name_when_saved=False)
    read = _read(http, "sess-1")
    annotations = [a for i in read["annotated_interactions"] for a in i["annotations"]]
    assert {(a["created_at"], a["modified_at"]) for a in annotations} == {(ZERO, ZERO)}
    assert all("name_when_saved" not in v and "type" in v for a in annotations for v in a["label_values"])
    assert {i["created_at"] for i in read["annotated_interactions"]} != {ZERO}


def test_failures_latency_and_the_control_api(datadog_sim: DatadogSimulator, http: httpx.Client) -> None:
    with httpx.Client(base_url=datadog_sim.base_url) as control:  # no Datadog keys: control is separate
        assert control.get("/_simulator/health").json() == {"ok": True}
        seeded = control.post("/_simulator/seed", json=SEED).json()
        assert seeded["counts"] == {"queues": 2, "interactions": 3, "annotations": 3}
        assert control.post("/_simulator/seed", json={"queues": [{"name": ""}]}).status_code == 400
        switches = control.post("/_simulator/config", json={"fail_next": 2, "fail_status": 503}).json()
        assert switches["fail_next"] == 2
        assert control.post("/_simulator/config", json={"fail_rate": 2}).status_code == 400
        assert control.post("/_simulator/config", json={"no_such_switch": 1}).status_code == 400

        statuses = [
            http.get(f"{API}/annotated-interactions", params={"contentIds": "sess-1"}).status_code
            for _ in range(3)
        ]
        assert statuses == [503, 503, 200]
        failure = http.get(f"{API}/annotation-queues")  # fail_next is spent
        assert failure.status_code == 200

        control.post("/_simulator/config", json={"fail_rate": 1.0, "fail_status": 500})
        failed = http.get(f"{API}/annotation-queues")
        assert failed.status_code == 500
        assert failed.json()["errors"][0]["status"] == "500"
        assert control.get("/_simulator/config").json()["fail_rate"] == 1.0  # control never fails

        control.post("/_simulator/config", json={"fail_rate": 0, "latency_ms": 150})
        started = time.monotonic()
        assert http.get(f"{API}/annotation-queues").status_code == 200
        assert time.monotonic() - started >= 0.15

        log = control.get("/_simulator/requests").json()
        assert [r["status"] for r in log["requests"]] == [503, 503, 200, 200, 500, 200]
        assert control.post("/_simulator/reset", json={}).json() == {"ok": True}
        assert control.get("/_simulator/config").json() == Switches().model_dump(mode="json")
        assert http.get(f"{API}/annotation-queues").json() == {"data": []}


def test_rate_limit_answers_429_with_every_header(datadog_sim: DatadogSimulator, http: httpx.Client) -> None:
    datadog_sim.configure(rate_limit="2/1s")
    ok = [http.get(f"{API}/annotation-queues") for _ in range(2)]
    limited = http.get(f"{API}/annotation-queues")
    assert [r.status_code for r in ok] == [200, 200]
    assert ok[0].headers["x-ratelimit-remaining"] == "1"
    assert ok[1].headers["x-ratelimit-remaining"] == "0"
    assert limited.status_code == 429
    assert limited.json() == {"errors": ["Too many requests"]}
    AS_SENT.validate_response(_OpenAPIRequest(limited.request), _OpenAPIResponse(limited))
    headers = {k: v for k, v in limited.headers.items() if k.startswith("x-ratelimit-")}
    assert headers == {
        "x-ratelimit-limit": "2",
        "x-ratelimit-period": "1",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": "1",
        "x-ratelimit-name": "llmobs_annotations",
    }
    time.sleep(float(headers["x-ratelimit-reset"]))
    assert http.get(f"{API}/annotation-queues").status_code == 200


def test_switches_flip_in_process_while_serving(datadog_sim: DatadogSimulator, http: httpx.Client) -> None:
    datadog_sim.seed(SEED)
    results: list[int] = []

    def reader() -> None:
        for _ in range(20):
            results.append(
                http.get(f"{API}/annotated-interactions", params={"contentIds": "sess-1"}).status_code
            )

    thread = threading.Thread(target=reader)
    datadog_sim.configure(fail_next=5)
    thread.start()
    thread.join()
    assert results.count(500) == 5
    assert results.count(200) == 15


# --- seeds, config and building blocks ---------------------------------------------------------


def test_seed_is_deterministic_atomic_and_merges(datadog_sim: DatadogSimulator) -> None:
    first = datadog_sim.seed(SEED)
    ids = {i.id for i in datadog_sim.state.store.interactions.values()}
    datadog_sim.reset()
    assert datadog_sim.seed(SEED) == first
    assert {i.id for i in datadog_sim.state.store.interactions.values()} == ids

    broken = copy.deepcopy(SEED)
    broken["queues"].append(
        {
            "name": "late",
            "label_schemas": [{"name": "s", "type": "score", "max": 1}],
            "interactions": [
                {"type": "trace", "content_id": "new", "annotations": [{"label_values": {"s": 9}}]}
            ],
        }
    )
    with pytest.raises(SimApiError) as refused:
        datadog_sim.seed(broken)
    assert (
        refused.value.errors[0]["source"]["pointer"]
        == "/queues/2/interactions/0/annotations/0/label_values/0/value"
    )
    assert {i.id for i in datadog_sim.state.store.interactions.values()} == ids  # nothing half-loaded

    more = {"queues": [{"name": "support", "interactions": [{"type": "trace", "content_id": "trace-2"}]}]}
    datadog_sim.seed(more)
    assert len(datadog_sim.state.store.interactions) == len(ids) + 1


def test_seed_file_and_command_line_config(tmp_path: Path) -> None:
    seed_file = tmp_path / "seed.json"
    seed_file.write_bytes(orjson.dumps(SEED))
    config = make_config(
        seed=seed_file,
        label_values="object",
        zero_time=True,
        latency_ms=5,
        fail_rate=0.1,
        rate_limit="100/1m",
        environ={"DD_API_KEY": "k1", "DD_APP_KEY": "k2"},
    )
    assert (config.api_key, config.app_key) == ("k1", "k2")
    assert config.switches.rate_limit == RateLimit(limit=100, period_s=60)
    assert make_config(api_key="explicit", environ={"DD_API_KEY": "env"}).api_key == "explicit"
    assert make_config(environ={}).api_key is None
    app = build_app(config)
    state = app.state.simulator
    assert len(state.store.queues) == 2
    assert state.switches.label_values == "object"
    state.configure(label_values="array")
    state.store.clear()
    state.reset()
    assert len(state.store.queues) == 2
    assert state.switches.label_values == "object"
    for text, expected in [
        ("5/second", (5, 1.0)),
        ("10/60", (10, 60.0)),
        ("3/2h", (3, 7200.0)),
        ("7/m", (7, 60.0)),
    ]:
        parsed = RateLimit.parse(text)
        assert (parsed.limit, parsed.period_s) == expected
    for text in ("5", "x/1", "5/1y", "0/1"):
        with pytest.raises(ValueError, match=r"rate limit|greater"):
            RateLimit.parse(text)


def test_a_bad_seed_file_is_a_readable_value_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError, match=r"seed .*missing\.json"):
        build_app(make_config(seed=missing, environ={}))
    broken = tmp_path / "broken.json"
    broken.write_text('{"queues": [{"name": "q", "interactions": [{"type": "span", "content_id": "x"}]}]}')
    with pytest.raises(ValueError, match=r"type must be one of .* at /queues/0/interactions/0/type"):
        build_app(make_config(seed=broken, environ={}))
    not_json = tmp_path / "not.json"
    not_json.write_text("{")
    with pytest.raises(ValueError, match="seed"):
        build_app(make_config(seed=not_json, environ={}))


def test_only_loopback_addresses() -> None:
    with pytest.raises(ValueError, match="loopback"):
        start_in_thread(host="0.0.0.0")


def test_official_client_lists_queues_by_project_and_ids_and_reads_one_whole(
    datadog_sim: DatadogSimulator, dd_api: AgentObservabilityApi
) -> None:
    """What scope discovery reads (SPEC §7), through datadog-api-client: queues by ``projectId``
    and by ``queueIds``, and a queue's interactions whole."""
    made = datadog_sim.seed(
        {
            "queues": [
                {"name": name, "project_id": project, "interactions": [{"type": kind, "content_id": cid}]}
                for name, project, kind, cid in (
                    ("q-a1", "proj-a", "trace", "t-1"),
                    ("q-a2", "proj-a", "session", "s-1"),
                    ("q-b1", "proj-b", "trace", "t-1"),
                )
            ]
        }
    )
    ids = {q["name"]: q["id"] for q in made["queues"]}
    by_project = dd_api.list_llm_obs_annotation_queues(project_id="proj-a")
    assert sorted(q.attributes.name for q in by_project.data) == ["q-a1", "q-a2"]
    assert {q.attributes.project_id for q in by_project.data} == {"proj-a"}
    by_ids = dd_api.list_llm_obs_annotation_queues(queue_ids=[ids["q-a2"], ids["q-b1"]])
    assert sorted(q.id for q in by_ids.data) == sorted([ids["q-a2"], ids["q-b1"]])
    everything = dd_api.list_llm_obs_annotation_queues()
    assert sorted(q.attributes.name for q in everything.data) == ["q-a1", "q-a2", "q-b1"]
    whole = dd_api.get_llm_obs_annotated_interactions(queue_id=ids["q-b1"])
    [item] = whole.data.attributes.annotated_interactions
    assert (item.content_id, str(item.type)) == ("t-1", "trace")
    with pytest.raises(ApiException) as both:
        dd_api.list_llm_obs_annotation_queues(project_id="proj-a", queue_ids=[ids["q-a1"]])
    assert both.value.status == 400  # the fragment says the two are exclusive
