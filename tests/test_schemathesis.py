"""Whatever a client sends, the registry answers 2xx or 4xx, never 5xx (issue #10 item 7).

Schemathesis reads the app's own OpenAPI description and generates requests for every
operation: valid ones (positive mode) and ones that break the schema (negative mode: wrong
types, huge integers, missing fields). A 5xx is our bug: bad input must be a 4xx problem.
The run is derandomized, so a failure reproduces exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.python import asgi  # noqa: E402

from copyledger.api.app import create_app  # noqa: E402
from copyledger.service.apikeys import create_key  # noqa: E402
from tests.helpers import open_registry  # noqa: E402

# Per operation and generation mode; the total is asserted below.
EXAMPLES = {GenerationMode.POSITIVE: 70, GenerationMode.NEGATIVE: 70}
MIN_REQUESTS = 2000

# A DER TimeStampReq is bytes like any other: generated bodies are random bytes.
schemathesis.serializer.alias("application/timestamp-query", "application/octet-stream")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[object]:
    node = open_registry(tmp_path)
    application = create_app(node)
    creator, _ = create_key(node.store, "creator", "alice")
    platform, _ = create_key(node.store, "platform", "tube")
    application.state.test_keys = {"creator": creator, "platform": platform}
    yield application
    asgi.shutdown_lifespans()  # stops the node the first request started


def test_no_input_gives_a_server_error(app: object) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    keys = app.state.test_keys  # type: ignore[attr-defined]
    sent: list[int] = []
    server_errors: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        # Platform routes get the platform key, everything else the creator key.
        role = "platform" if "platforms" in (operation.definition.raw.get("tags") or []) \
            else "creator"
        for mode, examples in EXAMPLES.items():
            try:
                _fuzz(operation, mode, examples, {"Authorization": f"Bearer {keys[role]}"},
                      sent, server_errors)
            except Unsatisfiable:
                # Negative mode on an operation with nothing to get wrong (no parameters, no
                # body) has no case to generate.
                assert mode is GenerationMode.NEGATIVE, operation.label
    print(f"schemathesis: {len(sent)} requests, {len(server_errors)} with a 5xx")
    assert not server_errors, f"{len(server_errors)} of {len(sent)} requests got a 5xx:\n" + \
        "\n".join(server_errors[:20])
    assert len(sent) >= MIN_REQUESTS, len(sent)


def _fuzz(operation: Any, mode: GenerationMode, examples: int, headers: dict[str, str],
          sent: list[int], server_errors: list[str]) -> None:
    """Send `examples` generated requests to one operation, noting each status and every 5xx."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    def run(case: Any) -> None:
        try:
            # Starlette answers an unhandled exception with a 500 and then re-raises it to the
            # server, which is where it arrives here.
            status, error = case.call(headers=headers).status_code, ""
        except Exception as e:
            status, error = 500, f"{type(e).__name__}: {e}"
        sent.append(status)
        if status >= 500:
            server_errors.append(f"{status} {operation.label} ({mode.value}) {error}\n  "
                                 f"{case.as_curl_command()}"[:600])

    run()
