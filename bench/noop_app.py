"""The yardstick for `http_bench.py --compare-noop` (issue 13): a FastAPI endpoint that does
nothing — a pydantic model in, small JSON out, nothing stored, `async def` — at the path and
with the body wrk_register.lua sends, run on ONE uvicorn worker.

    python -m uvicorn bench.noop_app:app --port 8001 --log-level warning --no-access-log
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class Work(BaseModel):
    sha256: str
    title: str
    creators: list[str]
    work_type: str


@app.post("/v1/works", status_code=201)
async def register(work: Work) -> dict[str, object]:
    return {"seq": 0, "sha256": work.sha256}
