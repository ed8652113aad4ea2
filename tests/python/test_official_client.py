"""Compatibility test: the official Noxus Python client (PyPI ``noxus-sdk``,
pinned in requirements.txt) works against our server unmodified.

The server under test is ``noxus-testserver`` (crate ``noxus-testkit``): it
starts the real platform on a free port with a fresh SQLite database, prints
one JSON line ``{"base_url", "workspace_id", "owner_key", "admin_key",
"member_key", "viewer_key"}`` and runs until its stdin is closed.

Only the client's public API is used. Run with ``tests/python/run.sh``.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import noxus_sdk
from noxus_sdk.client import Client

try:
    from noxus_sdk.errors import (
        ForbiddenError,
        NotFoundError,
        UnauthorizedError,
    )

    ERROR_TYPES: dict[int, type[Exception]] = {
        401: UnauthorizedError,
        403: ForbiddenError,
        404: NotFoundError,
    }
except ImportError:
    # 0.5.x has no typed errors: it raises httpx's HTTPStatusError, whose
    # `response` carries the same status, body and request id.
    import httpx

    ERROR_TYPES = {status: httpx.HTTPStatusError for status in (401, 403, 404)}
from noxus_sdk.resources.admin import ApiKey, Workspace
from noxus_sdk.resources.workflows import WorkflowVersion
from noxus_sdk.workflows import WorkflowDefinition

# Both release lines run this file (tests/python/run.sh --client 0.5):
# 0.6.0 added runs.stop/run_sync/search/delete/get_data; 0.5.x runs,
# waits, streams, lists, gets and reads node io.
CLIENT_VERSION = tuple(int(part) for part in noxus_sdk.__version__.split(".")[:2])
HAS_RUN_MANAGEMENT = CLIENT_VERSION >= (0, 6)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TESTSERVER = REPO_ROOT / "target" / "debug" / "noxus-testserver"
STARTUP_TIMEOUT_SECONDS = 30

# A Noxus key is `noxus_` + 32 base62 characters + a 6-character base62 CRC32
# checksum of those 32 (crates/noxus-api/src/key_format.rs).
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62_checksum(body: str) -> str:
    n = zlib.crc32(body.encode())
    out = []
    for _ in range(6):
        out.append(_BASE62[n % 62])
        n //= 62
    return "".join(reversed(out))


# Looks like a key (prefix, length, alphabet) but the checksum is wrong.
GARBAGE_NOXUS_KEY = "noxus_" + "Q7vLr2XkP9mTz4WbN8cYd3HsJ6fGa1Ue5KoRwi"
# Passes every offline check (checksum included) but was never issued.
_UNKNOWN_BODY = "Zy0WqM4tB7nK2pXvC9rL5sD8fH3gJ6aE"
UNKNOWN_WELL_FORMED_KEY = "noxus_" + _UNKNOWN_BODY + _base62_checksum(_UNKNOWN_BODY)
assert _base62_checksum(GARBAGE_NOXUS_KEY[6:38]) != GARBAGE_NOXUS_KEY[38:]
NOT_A_NOXUS_KEY = "sk-this-is-not-a-noxus-key-at-all"

BAD_KEYS = pytest.mark.parametrize(
    "bad_key",
    [GARBAGE_NOXUS_KEY, UNKNOWN_WELL_FORMED_KEY, NOT_A_NOXUS_KEY],
    ids=["garbage-noxus-key", "unknown-well-formed-key", "non-noxus-string"],
)


# ── the server under test ────────────────────────────────────────────────


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, Any]]:
    """Starts noxus-testserver and yields its JSON description."""
    binary = Path(os.environ.get("NOXUS_TESTSERVER") or DEFAULT_TESTSERVER)
    if not binary.is_file():
        pytest.fail(
            f"noxus-testserver not found at {binary}: build it with "
            "`cargo build -p noxus-testkit --bin noxus-testserver` "
            "or set NOXUS_TESTSERVER",
            pytrace=False,
        )
    # The server's logs go to a file (a pipe nobody drains could fill up and
    # block the server); they are shown if start-up fails.
    with tempfile.TemporaryFile(mode="w+b") as log:
        proc = subprocess.Popen(
            [str(binary)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        try:
            line = _read_first_line(proc, STARTUP_TIMEOUT_SECONDS)
            if not line:
                log.seek(0)
                pytest.fail(
                    f"noxus-testserver printed nothing (exit code {proc.poll()}); "
                    f"its log:\n{log.read().decode(errors='replace')}",
                    pytrace=False,
                )
            info = json.loads(line)
            assert not info["base_url"].endswith("/"), info["base_url"]
            yield info
        finally:
            # Closing stdin is the shutdown signal.
            if proc.stdin:
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()


def _read_first_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                pytest.fail(
                    f"noxus-testserver did not print its JSON line within {timeout} s",
                    pytrace=False,
                )
            if not sel.select(remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:  # EOF: the server exited
                break
            buf += chunk
    return buf.split(b"\n", 1)[0].decode()


@pytest.fixture(scope="module")
def base_url(server: dict[str, Any]) -> str:
    return server["base_url"]


@pytest.fixture(scope="module")
def owner(server: dict[str, Any]) -> Client:
    """A client with the tenant-admin (owner) key."""
    return Client(api_key=server["owner_key"], base_url=server["base_url"])


# ── helpers ──────────────────────────────────────────────────────────────


def _input_to_output_workflow(client: Client, name: str) -> WorkflowDefinition:
    wf = WorkflowDefinition(name=name, client=client)
    source = wf.node("InputNode").config(label="question")
    sink = wf.node("OutputNode").config(label="answer")
    wf.link(source.output(), sink.input())
    return wf


def _assert_error(exc: Exception, status: int) -> None:
    """The error carries the status, the parsed JSON body and the request id."""
    response = getattr(exc, "response", None)
    if response is not None and not hasattr(exc, "status_code"):
        # 0.5.x: the raw response of httpx's HTTPStatusError.
        assert response.status_code == status
        body = response.json()
        assert isinstance(body.get("detail"), str) and body["detail"]
        request_id = response.headers.get("x-request-id")
        assert request_id, "x-request-id header missing from the error response"
        assert body.get("request_id") == request_id
        return
    assert exc.status_code == status
    assert isinstance(exc.body, dict), exc.body
    assert isinstance(exc.body.get("detail"), str) and exc.body["detail"]
    assert exc.request_id, "x-request-id header missing from the error response"
    assert exc.body.get("request_id") == exc.request_id
    assert str(exc).startswith(f"{status} ")
    assert exc.request_id in str(exc)


@contextlib.contextmanager
def expect_error(status: int) -> Iterator[None]:
    """The block fails with the client's error for `status`, described
    (detail and request id), whichever release line the client is."""
    with pytest.raises(ERROR_TYPES[status]) as info:
        yield
    _assert_error(info.value, status)


def _shape(wf: WorkflowDefinition) -> tuple[Any, ...]:
    """What the server must round-trip: node ids/types/config, edges."""
    nodes = sorted(
        (n.id, n.type, tuple(sorted(n.node_config.items()))) for n in wf.nodes
    )
    edges = sorted(
        (
            e.id,
            e.from_id.node_id,
            e.from_id.connector_name,
            e.to_id.node_id,
            e.to_id.connector_name,
        )
        for e in wf.edges
    )
    # 0.5.x has no flow_version.
    return (wf.type, getattr(wf, "flow_version", None), tuple(nodes), tuple(edges))


# ── tests ────────────────────────────────────────────────────────────────


def test_constructing_a_client_loads_the_node_catalog_and_the_keys_identity(
    server: dict[str, Any],
) -> None:
    client = Client(api_key=server["owner_key"], base_url=server["base_url"])
    node_types = {n["type"] for n in client.nodes}
    assert {"InputNode", "OutputNode"} <= node_types
    # load_me: the owner key is a tenant admin, so the admin service is on.
    assert client.admin.enabled is True


def test_get_models_returns_a_list_of_models(owner: Client) -> None:
    models = owner.get_models()
    assert isinstance(models, list)
    assert models, "the model catalog is empty"
    assert all(isinstance(m, dict) for m in models)


def test_listing_workflows_returns_workflow_definitions(owner: Client) -> None:
    saved = owner.workflows.save(_input_to_output_workflow(owner, "listed"))
    try:
        listed = owner.workflows.list()
        assert all(isinstance(w, WorkflowDefinition) for w in listed)
        assert saved.id in {w.id for w in listed}
        # The client sends page/page_size/type=flow/size; a small page is honoured.
        assert len(owner.workflows.list(page=1, page_size=1)) == 1
    finally:
        owner.workflows.delete(saved.id)


def test_a_workflow_built_with_the_sdk_can_be_saved_fetched_renamed_and_deleted(
    owner: Client, server: dict[str, Any]
) -> None:
    wf = _input_to_output_workflow(owner, "compat input to output")
    built = _shape(wf)

    saved = owner.workflows.save(wf)
    assert saved is wf
    assert wf.id, "save did not assign an id"
    assert wf.group_id == server["workspace_id"]
    assert wf.name == "compat input to output"
    assert _shape(wf) == built

    fetched = owner.workflows.get(wf.id)
    assert fetched.id == wf.id
    assert fetched.name == "compat input to output"
    assert _shape(fetched) == built
    # The fetched definition is usable by the builder again.
    assert fetched.nodes[0].output() is not None

    wf.name = "compat renamed"
    updated = owner.workflows.update(wf.id, wf)
    assert updated.name == "compat renamed"
    assert owner.workflows.get(wf.id).name == "compat renamed"
    assert _shape(owner.workflows.get(wf.id)) == built

    # The model's own update() goes through the same call.
    wf.name = "compat renamed again"
    wf.update()
    assert wf.name == "compat renamed again"
    assert owner.workflows.get(wf.id).name == "compat renamed again"

    owner.workflows.delete(wf.id)
    with expect_error(404):
        owner.workflows.get(wf.id)
    assert wf.id not in {w.id for w in owner.workflows.list(page_size=100)}


def test_workflow_versions_can_be_saved_listed_and_renamed(owner: Client) -> None:
    wf = owner.workflows.save(_input_to_output_workflow(owner, "versioned"))
    try:
        version = wf.save_version("first", "the first version")
        assert isinstance(version, WorkflowVersion)
        assert version.name == "first"
        assert version.description == "the first version"
        assert {n["id"] for n in version.definition["nodes"]} == {
            n.id for n in wf.nodes
        }

        assert [v.id for v in wf.list_versions()] == [version.id]

        renamed = wf.update_version(str(version.id), "first, renamed", None)
        assert renamed.id == version.id
        assert renamed.name == "first, renamed"
        assert renamed.description is None
    finally:
        owner.workflows.delete(wf.id)


def test_get_me_describes_the_calling_key(
    owner: Client, server: dict[str, Any]
) -> None:
    me = owner.admin.get_me()
    assert isinstance(me, ApiKey)
    assert me.id and me.name
    assert me.tenant_admin is True
    assert me.value  # present (may be masked)

    # /v1/admin/me must work for every valid key, or Client() fails.
    member = Client(api_key=server["member_key"], base_url=server["base_url"])
    member_me = member.admin.get_me()
    assert member_me.tenant_admin is False
    assert member_me.id != me.id
    assert member.admin.enabled is False


def test_a_tenant_admin_can_create_a_workspace_and_a_key_that_works_in_a_new_client(
    owner: Client, base_url: str
) -> None:
    name = f"compat workspace {uuid.uuid4().hex[:8]}"
    workspace = owner.admin.create_workspace(
        name, description="made by the official client"
    )
    assert isinstance(workspace, Workspace)
    assert workspace.id and workspace.name == name
    assert workspace.description == "made by the official client"
    assert workspace.id in {w.id for w in owner.admin.list_workspaces()}

    key = workspace.add_api_key("compat key")
    assert isinstance(key, ApiKey)
    assert key.name == "compat key"
    assert key.tenant_admin is False
    assert key.value.startswith("noxus_")

    newcomer = Client(api_key=key.value, base_url=base_url)
    me = newcomer.admin.get_me()
    assert me.id == key.id
    assert me.tenant_admin is False
    assert newcomer.admin.enabled is False

    # The new key works in its own (empty) workspace.
    assert newcomer.workflows.list() == []
    wf = newcomer.workflows.save(
        _input_to_output_workflow(newcomer, "in the new workspace")
    )
    assert wf.group_id == workspace.id
    assert [w.id for w in newcomer.workflows.list()] == [wf.id]
    newcomer.workflows.delete(wf.id)


@BAD_KEYS
def test_constructing_a_client_with_a_bad_key_raises_unauthorized(
    base_url: str, bad_key: str
) -> None:
    with expect_error(401):
        Client(api_key=bad_key, base_url=base_url)


@BAD_KEYS
def test_a_bad_key_is_rejected_with_401_on_an_api_call(
    base_url: str, bad_key: str
) -> None:
    client = Client(bad_key, base_url=base_url, load_nodes=False, load_me=False)
    with expect_error(401):
        client.get_models()
    with expect_error(401):
        client.workflows.list()


def test_an_empty_key_is_rejected_with_401(base_url: str) -> None:
    with expect_error(401):
        Client(api_key="", base_url=base_url)


def test_a_viewer_key_can_read_but_saving_a_workflow_is_forbidden(
    server: dict[str, Any],
) -> None:
    viewer = Client(api_key=server["viewer_key"], base_url=server["base_url"])
    assert isinstance(viewer.workflows.list(), list)

    with expect_error(403):
        viewer.workflows.save(_input_to_output_workflow(viewer, "not allowed"))


# ── runs ─────────────────────────────────────────────────────────────────


def _greeting_workflow(client: Client, name: str) -> tuple[WorkflowDefinition, Any, Any]:
    """input → compose text → output, built with the client's builder."""
    wf = WorkflowDefinition(name=name, client=client)
    source = wf.node("InputNode").config(label="name")
    compose = wf.node("ComposeTextNode").config(template="Hello, {input}!")
    sink = wf.node("OutputNode").config(label="greeting")
    wf.link(source.output(), compose.input())
    wf.link(compose.output(), sink.input())
    return wf, source, sink


def test_a_workflow_built_with_the_sdk_runs_and_wait_returns_its_output(
    server: dict[str, Any],
) -> None:
    member = Client(api_key=server["member_key"], base_url=server["base_url"])
    wf, source, sink = _greeting_workflow(member, "greeting")
    saved = member.workflows.save(wf)
    try:
        input_key = source.inputs[0].id
        output_key = sink.outputs[0].id
        run = saved.run({input_key: "Ada"})
        assert run.workflow_id == saved.id
        assert run.status in ("queued", "running", "completed")

        # wait() through the event stream.
        done = run.wait(interval=1)
        assert done.status == "completed"
        assert done.progress == 100
        assert done.output[output_key]["text"] == "Hello, Ada!"
        assert done.wait(output_only=True) == done.output

        # wait() through its polling fallback: the stream made to fail.
        polled = saved.run({input_key: "Grace"})

        def no_stream(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("no event stream in this test")

        original = member.event_stream
        member.event_stream = no_stream  # type: ignore[method-assign]
        try:
            output = polled.wait(interval=1, output_only=True)
        finally:
            member.event_stream = original  # type: ignore[method-assign]
        assert output[output_key]["text"] == "Hello, Grace!"

        # The events of a run, ending with the terminal one.
        streamed = saved.run({input_key: "Alan"})
        events = list(streamed.stream())
        assert events[-1].data["workflow_status"] == "completed"
        assert events[-1].is_terminal
        assert "node_started" in {e.type for e in events}

        # Listed, fetched and its node io.
        listed = member.runs.list(saved.id, page=1, page_size=10)
        assert {r.id for r in listed} >= {run.id, polled.id, streamed.id}
        assert member.runs.get(saved.id, run.id).output == done.output
        io = member.runs.get_node_io(run.id, sink.id)
        assert io["input"]["input"] == "Hello, Ada!"
        if not HAS_RUN_MANAGEMENT:
            # 0.5.x has none of what follows.
            assert not hasattr(member.runs, "run_sync")
            return

        # A finished run's stop answers it as it is.
        assert member.runs.stop(run.id).status == "completed"

        # Synchronously run, searched, deleted.
        synced = member.runs.run_sync(saved.id, {input_key: "Edsger"})
        assert synced["output"][output_key]["text"] == "Hello, Edsger!"
        only = member.runs.run_sync(saved.id, {input_key: "Barbara"}, output_only=True)
        assert only[output_key]["text"] == "Hello, Barbara!"
        assert run.id in {r["id"] for r in member.runs.search("Ada")}
        deletion = member.runs.delete(run.id)
        assert (deletion.succeeded, deletion.failed, deletion.matched) == (1, 0, 1)
        with expect_error(404):
            member.runs.get(saved.id, run.id)
    finally:
        member.workflows.delete(saved.id)


def test_a_viewer_cannot_start_a_run_and_another_workspace_cannot_see_one(
    server: dict[str, Any], owner: Client
) -> None:
    wf, source, _sink = _greeting_workflow(owner, "guarded")
    saved = owner.workflows.save(wf)
    try:
        run = saved.run({source.inputs[0].id: "x"})
        run.wait(interval=1)

        viewer = Client(api_key=server["viewer_key"], base_url=server["base_url"])
        viewers_copy = viewer.workflows.get(saved.id)
        with expect_error(403):
            viewers_copy.run({source.inputs[0].id: "y"})
        assert viewer.runs.get(saved.id, run.id).status == "completed"

        workspace = owner.admin.create_workspace(f"runs elsewhere {uuid.uuid4().hex[:8]}")
        key = workspace.add_api_key("elsewhere")
        outsider = Client(api_key=key.value, base_url=server["base_url"])
        with expect_error(404):
            outsider.runs.get(saved.id, run.id)
        with expect_error(404):
            outsider.runs.get_node_io(run.id, source.id)
        if HAS_RUN_MANAGEMENT:
            with expect_error(404):
                outsider.runs.stop(run.id)
    finally:
        owner.workflows.delete(saved.id)
