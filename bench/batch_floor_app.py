"""The floor for `batch_bench.py --compare-floor` (issue 13): `POST /v1/works/batch` on a
FastAPI endpoint that registers nothing. A pydantic model of the batch in (up to 1,000 works,
`async def`), and out the very answer the registry gave the same batch in the run before,
read from a file: the bytes the verifying clients then check exactly as they checked the
registry's. Its rate is what this machine gives the HTTP exchange, the request's JSON, the
answer's bytes and the clients' verification of every receipt, with no registry behind them.
It is lighter than any registry in ways of its own: the answer is sent as recorded (no
encoding), the request is read by FastAPI's own JSON and model (the registry uses orjson and
its own checks), and no API key is checked. Run on ONE uvicorn worker, like the no-op of
`noop_app.py`:

    COPYLEDGER_FLOOR_ANSWERS=DIR python -m uvicorn bench.batch_floor_app:app --port 8002

DIR holds `log.json` and `whoami.json` (the registry's GET /v1/log and /v1/whoami answers,
which give the clients the log's key and their account) and `<sha256>.json` for each batch,
named by the SHA-256 of its first work (`batch_bench.run_client(record=DIR)` writes them).
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, Response
from pydantic import BaseModel, Field

ANSWERS = Path(os.environ["COPYLEDGER_FLOOR_ANSWERS"])  # no default: a run must name them

app = FastAPI()


class Work(BaseModel):
    sha256: str = Field(pattern="^[0-9a-f]{64}$")  # it names a file below
    title: str
    creators: list[str]
    work_type: str


class Batch(BaseModel):
    works: list[Work] = Field(min_length=1, max_length=1000)


def _recorded(name: str) -> Response:
    return Response((ANSWERS / name).read_bytes(), media_type="application/json")


@app.post("/v1/works/batch")
async def register_works(batch: Batch) -> Response:
    return _recorded(f"{batch.works[0].sha256}.json")


@app.get("/v1/log")
async def log() -> Response:
    return _recorded("log.json")


@app.get("/v1/whoami")
async def whoami() -> Response:
    return _recorded("whoami.json")
