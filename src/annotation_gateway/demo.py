"""``annotation-gateway demo`` (``make run``): Phoenix + Datadog simulator + gateway, seeded.

Contract of :func:`run_demo`:
- starts a real Phoenix (:class:`~annotation_gateway.devservers.phoenix.PhoenixServer`, from the
  ``.venv-phoenix`` that ``make phoenix`` installs), the Datadog simulator and the gateway, every
  listener on 127.0.0.1: the well-known ports (Phoenix 6006, simulator 8780, gateway 8080) when
  free, otherwise free ones — the printed URLs say which;
- seeds both vendors **through their own APIs** with :mod:`annotation_gateway.demo_data`:
  Phoenix via REST (project, spans carrying ``session.id``, session and trace annotations with
  ``sync=true``); Datadog via the queue operations of
  :class:`~annotation_gateway.providers.datadog.DatadogProvider` (create queue with label schema,
  add interactions, upsert annotations) against the simulator;
- checks the gateway answers with both vendors' annotations (counted apart on the sessions and
  on their traces), prints ``curl`` lines using the demo's bearer key, writes a config file for
  the command line (its actual ports; removed at exit) and prints command lines that run as
  printed in any shell (:func:`cli_examples`: the CLI by the absolute path of the installed
  script, :func:`cli_command`, since ``make run`` puts nothing on ``PATH``; one of them reaches
  the trace-level annotations with ``-s trace:<id>``), and stays up until Ctrl-C or SIGTERM,
  then stops everything (gateway, then simulator, then Phoenix's process group) — also when
  start-up fails half way.

The demo's keys are fixed, public demo values (never use them elsewhere); the Datadog keys reach
the gateway through environment variables, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from pydantic import SecretStr

from annotation_gateway.api.app import create_app
from annotation_gateway.api.serving import ThreadedServer, free_port
from annotation_gateway.demo_data import (
    DATADOG_LABEL_SCHEMAS,
    DATADOG_QUEUE,
    PROJECT,
    SESSIONS,
    trace_id_for,
)
from annotation_gateway.devservers.phoenix import PhoenixSeeder, PhoenixServer
from annotation_gateway.providers.datadog import (
    AnnotationUpsert,
    DatadogProvider,
    DatadogSourceConfig,
    LabelSchema,
    LabelValueInput,
)
from annotation_gateway.providers.phoenix import PhoenixSourceConfig
from annotation_gateway.settings import ApiKeyConfig, AuthConfig, GatewaySettings, ServerConfig, hash_key

__all__ = [
    "DEMO_GATEWAY_KEY",
    "DemoStack",
    "cli_command",
    "cli_examples",
    "curl_examples",
    "demo_config_toml",
    "demo_stack",
    "run_demo",
    "seed_datadog",
    "seed_phoenix",
]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
GATEWAY_PORT = 8080
PHOENIX_PORT = 6006
PHOENIX_GRPC_PORT = 4317
SIMULATOR_PORT = 8780

DEMO_GATEWAY_KEY = "demo-gateway-key"
"""The bearer key the printed curl lines use (a public demo value)."""
DEMO_DD_API_KEY = "demo-dd-api-key-0000"
DEMO_DD_APP_KEY = "demo-dd-app-key-0000"
DD_API_KEY_ENV = "DEMO_DD_API_KEY"
DD_APP_KEY_ENV = "DEMO_DD_APP_KEY"
PHOENIX_SOURCE = "phoenix-local"
DATADOG_SOURCE = "datadog-sim"
PHOENIX_START_TIMEOUT_S = 180.0
"""Phoenix answers in 13-19 s on a 2-core machine; a cold first start (migrations) takes longer."""
TURN_SPACING = timedelta(minutes=2)


@dataclass
class DemoStack:
    """The running demo: where everything listens."""

    phoenix_url: str
    simulator_url: str
    gateway_url: str
    gateway_key: str
    settings: GatewaySettings


# --- seeding ----------------------------------------------------------------------------------


def seed_phoenix(base_url: str, *, api_key: str | None = None) -> int:
    """Create the project, its spans and annotations in Phoenix; the number of annotations."""
    start = datetime.now(UTC) - timedelta(days=1)
    spans: list[dict[str, Any]] = []
    session_rows: list[dict[str, Any]] = []
    trace_rows: list[dict[str, Any]] = []
    for n, session in enumerate(SESSIONS):
        for turn, (question, answer) in enumerate(session.turns):
            trace_id = trace_id_for(session.id, turn)
            spans.append(
                PhoenixSeeder.span(
                    trace_id=trace_id,
                    span_id=trace_id[:16],
                    session_id=session.id,
                    name=f"support turn {turn + 1}",
                    start_time=start + n * timedelta(hours=1) + turn * TURN_SPACING,
                    attributes={"input.value": question, "output.value": answer, "topic": session.topic},
                )
            )
            if session.phoenix is not None and turn < len(session.correct_turns):
                ok = session.correct_turns[turn]
                trace_rows.append(
                    {
                        "trace_id": trace_id,
                        "name": "correctness",
                        "annotator_kind": "LLM",
                        "result": {
                            "label": "correct" if ok else "incorrect",
                            "score": 1.0 if ok else 0.0,
                            "explanation": None if ok else "Leaks personal data.",
                        },
                        "metadata": {"judge": "gpt-judge-v2"},
                        "identifier": "",
                    }
                )
        review = session.phoenix
        if review is None:
            continue
        session_rows += [
            {
                "session_id": session.id,
                "name": "resolution",
                "annotator_kind": "HUMAN",
                "result": {"label": review.resolution, "score": None, "explanation": None},
                "metadata": {"reviewer": review.reviewer},
                "identifier": "",
            },
            {
                "session_id": session.id,
                "name": "helpfulness",
                "annotator_kind": "LLM",
                "result": {"label": None, "score": review.helpfulness, "explanation": review.judge_note},
                "metadata": {"judge": "gpt-judge-v2"},
                "identifier": "",
            },
            {
                "session_id": session.id,
                "name": "pii_check",
                "annotator_kind": "CODE",
                "result": {
                    "label": "pass" if review.pii_ok else "fail",
                    "score": 1.0 if review.pii_ok else 0.0,
                    "explanation": None,
                },
                "metadata": {"checker": "pii-regex 1.4"},
                "identifier": "",
            },
        ]
    with PhoenixSeeder(base_url, api_key=api_key) as seeder:
        seeder.create_project(PROJECT, "Demo: customer support conversations")
        seeder.add_spans(PROJECT, spans)
        seeder.annotate_sessions(session_rows)
        seeder.annotate_traces(trace_rows)
    return len(session_rows) + len(trace_rows)


async def seed_datadog(base_url: str, *, api_key: str, app_key: str) -> int:
    """Create the queue, add the sessions and upsert the reviews in Datadog (the simulator);
    the number of label values written."""
    provider = DatadogProvider(
        name="demo-seeder", base_url=base_url, api_key=SecretStr(api_key), app_key=SecretStr(app_key)
    )
    try:
        queue = await provider.queues.create_queue(
            DATADOG_QUEUE,
            project_id=PROJECT,
            description="Demo: support conversations to review",
            label_schemas=[LabelSchema.model_validate(s) for s in DATADOG_LABEL_SCHEMAS],
        )
        label_ids = {label.name: label.id for label in queue.label_schemas}
        reviewed = [s for s in SESSIONS if s.datadog is not None]
        added = await provider.queues.add_interactions(queue.id, [("session", s.id) for s in reviewed])
        interaction_of = {item.content_id: item.id for item in added}
        upserts: list[AnnotationUpsert] = []
        written = 0
        for session in reviewed:
            review = session.datadog
            assert review is not None
            values = [
                LabelValueInput(
                    label_schema_id=_label_id(label_ids, "resolution"),
                    value=[review.resolution],
                    reasoning=review.reasoning,
                ),
                LabelValueInput(
                    label_schema_id=_label_id(label_ids, "helpfulness"), value=review.helpfulness
                ),
                LabelValueInput(label_schema_id=_label_id(label_ids, "tone"), value=[review.tone]),
            ]
            if review.feedback:
                values.append(
                    LabelValueInput(label_schema_id=_label_id(label_ids, "feedback"), value=review.feedback)
                )
            written += len(values)
            upserts.append(AnnotationUpsert(interaction_id=interaction_of[session.id], label_values=values))
        result = await provider.queues.upsert_annotations(queue.id, upserts)
        if result.errors:
            raise RuntimeError(f"Datadog simulator refused demo annotations: {result.errors}")
        return written
    finally:
        await provider.aclose()


def _label_id(label_ids: dict[str, str | None], name: str) -> str:
    label_id = label_ids.get(name)
    if not label_id:
        raise RuntimeError(f"the Datadog queue has no label {name!r}")
    return label_id


# --- the stack --------------------------------------------------------------------------------


def _settings(phoenix_url: str, simulator_url: str, gateway_port: int) -> GatewaySettings:
    return GatewaySettings(
        server=ServerConfig(host=HOST, port=gateway_port),
        auth=AuthConfig(enabled=True, keys=[ApiKeyConfig(name="demo", sha256=hash_key(DEMO_GATEWAY_KEY))]),
        sources=[
            PhoenixSourceConfig(name=PHOENIX_SOURCE, base_url=phoenix_url, project=PROJECT),
            DatadogSourceConfig(
                name=DATADOG_SOURCE,
                base_url=simulator_url,
                api_key_env=DD_API_KEY_ENV,
                app_key_env=DD_APP_KEY_ENV,
            ),
        ],
    )


@contextlib.contextmanager
def demo_stack(
    *,
    gateway_port: int = GATEWAY_PORT,
    phoenix_port: int = PHOENIX_PORT,
    simulator_port: int = SIMULATOR_PORT,
    phoenix: PhoenixServer | None = None,
    progress: Callable[[str], None] = print,
) -> Iterator[DemoStack]:
    """Start, seed and yield the demo; everything it started is stopped when the block exits.

    ``phoenix``: an already running Phoenix to seed instead of starting one (tests); the caller
    keeps owning it. Its ``support-bot`` project must not exist yet."""
    from annotation_gateway.simulators.datadog import make_config, start_in_thread

    with contextlib.ExitStack() as stack:
        own_phoenix = phoenix is None
        if phoenix is None:
            phoenix = PhoenixServer(
                port=free_port(HOST, phoenix_port), grpc_port=free_port(HOST, PHOENIX_GRPC_PORT)
            )
            stack.callback(phoenix.stop)
            progress(f"starting Phoenix on {phoenix.base_url} (takes 15-30 s) ...")
            phoenix.launch()  # Phoenix boots while the simulator is started and seeded

        simulator = start_in_thread(
            make_config(api_key=DEMO_DD_API_KEY, app_key=DEMO_DD_APP_KEY, environ={}),
            host=HOST,
            port=free_port(HOST, simulator_port),
        )
        stack.callback(simulator.stop)
        progress(f"Datadog simulator on {simulator.base_url}; seeding it through its queue API ...")
        dd_count = asyncio.run(
            seed_datadog(simulator.base_url, api_key=DEMO_DD_API_KEY, app_key=DEMO_DD_APP_KEY)
        )

        if own_phoenix:
            phoenix.start(timeout_s=PHOENIX_START_TIMEOUT_S)
        progress(f"Phoenix {phoenix.version or ''} is up; seeding it through its REST API ...")
        phx_count = seed_phoenix(phoenix.base_url)

        # The gateway reads the Datadog keys from the environment, as in production.
        os.environ[DD_API_KEY_ENV] = DEMO_DD_API_KEY
        os.environ[DD_APP_KEY_ENV] = DEMO_DD_APP_KEY
        settings = _settings(phoenix.base_url, simulator.base_url, free_port(HOST, gateway_port))
        gateway = ThreadedServer(create_app(settings), host=HOST, port=settings.server.port)
        gateway.start()
        stack.callback(gateway.stop)
        progress(
            f"seeded {phx_count} Phoenix annotations and {dd_count} Datadog label values "
            f"over {len(SESSIONS)} sessions"
        )
        yield DemoStack(
            phoenix_url=phoenix.base_url,
            simulator_url=simulator.base_url,
            gateway_url=gateway.base_url,
            gateway_key=DEMO_GATEWAY_KEY,
            settings=settings,
        )


def curl_examples(stack: DemoStack) -> list[str]:
    """The curl lines the demo prints."""
    auth = f'-H "Authorization: Bearer {stack.gateway_key}"'
    url = stack.gateway_url
    agree, differ, phoenix_only, datadog_only = (
        SESSIONS[0].id,
        SESSIONS[6].id,
        SESSIONS[9].id,
        SESSIONS[11].id,
    )
    return [
        f"curl -s {auth} '{url}/v1/annotations?subject_id={agree}&subject_id={differ}&name=resolution'",
        f"curl -s {auth} '{url}/v1/annotations?subject_id={phoenix_only}&subject_id={datadog_only}&limit=5'",
        f"curl -s {auth} -X POST {url}/v1/annotations/search -H 'Content-Type: application/json' "
        f"""-d '{{"subject_ids": ["{agree}", "{differ}"], "annotator_kinds": ["LLM"]}}'""",
        f"curl -s {auth} '{url}/v1/sources'",
        # No ids: every session and trace of the Phoenix project and every Datadog queue (SPEC §7).
        f"curl -s {auth} '{url}/v1/annotations?scope=all&name=resolution&limit=5'",
        # Dashboards: per day and source, and "does the LLM judge agree with the reviewers?"
        f"curl -s {auth} '{url}/v1/annotations/metrics?scope=all&group_by=name&group_by=source&interval=day'",
        f"curl -s {auth} '{url}/v1/annotations/agreement?scope=all&by=source&name=resolution'",
        f"curl -si {auth} '{url}/v1/annotations?subject_id={agree}' | grep -i server-timing",
        f"curl -s '{url}/readyz'; curl -s '{url}/metrics' | grep annotation_gateway_cache",
        f"{url}/docs   # the OpenAPI UI, in a browser",
    ]


CLI_NAME = "annotation-gateway"


def cli_command() -> str:
    """The command line's command, as a shell word that runs from any directory and ``PATH``.

    ``make run`` starts the demo as ``.venv/bin/annotation-gateway`` without putting ``.venv/bin``
    on ``PATH``, so the bare name would be "command not found". This is the absolute path of the
    ``annotation-gateway`` script that is running (``sys.argv[0]``), else of the one installed next
    to the running interpreter (the same environment), else ``<interpreter> -m
    annotation_gateway.cli``."""
    candidates: list[Path] = []
    if sys.argv and Path(sys.argv[0]).name == CLI_NAME:
        candidates.append(Path(sys.argv[0]))
    if sys.executable:
        # Not resolved: a venv's python is a symlink out of the venv, its scripts are not.
        candidates.append(Path(sys.executable).parent / CLI_NAME)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return shlex.quote(os.path.abspath(candidate))
    return shlex.join([os.path.abspath(sys.executable or "python3"), "-m", "annotation_gateway.cli"])


def cli_examples(config_file: Path) -> list[str]:
    """The command lines the demo prints: each runs as printed (in order) in any shell."""
    cli = f"{cli_command()} query --config {shlex.quote(str(config_file))}"
    differ = SESSIONS[6]
    traces = " ".join(f"-s trace:{trace_id_for(differ.id, turn)}" for turn in range(len(differ.turns)))
    return [
        f"export {DD_API_KEY_ENV}={DEMO_DD_API_KEY} {DD_APP_KEY_ENV}={DEMO_DD_APP_KEY}",
        f"{cli} -s {SESSIONS[6].id} -s {SESSIONS[8].id}",
        f"{cli} {traces}   # the traces (turns) of {differ.id}",
    ]


def demo_config_toml(stack: DemoStack) -> str:
    """A gateway config for the running demo's actual ports (for the command line: query, compare,
    export, migrate, or a second ``serve``). Secrets stay in the environment, as always."""
    phoenix, datadog = stack.settings.sources
    assert isinstance(phoenix, PhoenixSourceConfig)
    assert isinstance(datadog, DatadogSourceConfig)
    return f"""# Written by `annotation-gateway demo` for its running servers; deleted when it stops.
# export {DD_API_KEY_ENV}={DEMO_DD_API_KEY} {DD_APP_KEY_ENV}={DEMO_DD_APP_KEY}

[server]
host = "{HOST}"
port = {stack.settings.server.port}

[auth]
enabled = true
[[auth.keys]]
name = "demo"
sha256 = "{hash_key(DEMO_GATEWAY_KEY)}"   # the key "{DEMO_GATEWAY_KEY}"

[[sources]]
name = "{PHOENIX_SOURCE}"
provider = "phoenix"
base_url = "{stack.phoenix_url}"
project = "{PROJECT}"

[[sources]]
name = "{DATADOG_SOURCE}"
provider = "datadog"
base_url = "{stack.simulator_url}"
api_key_env = "{DD_API_KEY_ENV}"
app_key_env = "{DD_APP_KEY_ENV}"
"""


def _self_check(stack: DemoStack) -> str:
    """One query through the gateway over HTTP, on every session and trace: how many
    annotations there are on the sessions and on their traces, and per source."""
    sessions = [s.id for s in SESSIONS]
    traces = [trace_id_for(s.id, turn) for s in SESSIONS for turn in range(len(s.turns))]
    response = httpx.post(
        f"{stack.gateway_url}/v1/annotations/search",
        json={"subject_ids": sessions + traces, "limit": 1000},
        headers={"Authorization": f"Bearer {stack.gateway_key}"},
        timeout=30,
        trust_env=False,
    )
    response.raise_for_status()
    body = response.json()
    on_sessions = sum(a["subject"]["kind"] == "session" for a in body["data"])
    on_traces = sum(a["subject"]["kind"] == "trace" for a in body["data"])
    parts = [f"{s['source']} {s['status']} {s['count']}" for s in body["sources"]]
    return (
        f"gateway answers {on_sessions} annotations for {len(sessions)} sessions and {on_traces} "
        f"for their {len(traces)} traces ({', '.join(parts)})"
    )


def run_demo(
    *,
    gateway_port: int = GATEWAY_PORT,
    phoenix_port: int = PHOENIX_PORT,
    simulator_port: int = SIMULATOR_PORT,
    stop: threading.Event | None = None,
) -> None:
    """Run the demo until Ctrl-C / SIGTERM (or until ``stop`` is set)."""
    stop = stop or threading.Event()
    serving = False

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        # While starting, unwind through the ExitStack (which stops what already runs);
        # once serving, just wake the main thread up.
        if not serving:
            raise KeyboardInterrupt
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, _on_signal)
    try:
        started = time.monotonic()
        with demo_stack(
            gateway_port=gateway_port, phoenix_port=phoenix_port, simulator_port=simulator_port
        ) as stack:
            print(_self_check(stack))
            print(f"\nready in {time.monotonic() - started:.0f} s:")
            print(f"  gateway    {stack.gateway_url}   (key: {stack.gateway_key})")
            print(f"  Phoenix    {stack.phoenix_url}   (project {PROJECT}; its own UI)")
            print(f"  Datadog    {stack.simulator_url}   (simulator)")
            print("\ntry:")
            for line in curl_examples(stack):
                print(f"  {line}")
            config_dir = Path(tempfile.mkdtemp(prefix="gw-demo-"))
            config_file = config_dir / "gateway.toml"
            config_file.write_text(demo_config_toml(stack), encoding="utf-8")
            print("\nthe command line, on the same sources:")
            for line in cli_examples(config_file):
                print(f"  {line}")
            print("\nCtrl-C stops everything.", flush=True)
            serving = True
            try:
                stop.wait()
            finally:
                shutil.rmtree(config_dir, ignore_errors=True)
            print("\nstopping ...", flush=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print("stopped.")


def main() -> None:
    """``python -m annotation_gateway.demo``."""
    with contextlib.suppress(KeyboardInterrupt):
        run_demo()


if __name__ == "__main__":
    main()
