"""The OpenAPI description's conventions, declared beside each route with these helpers.

A generated client is only as good as the document: every operation says who may call it
(`secured(...)` or `PUBLIC`), what it takes (`json_request`), what it answers (`answers`) and
which problems it can return (`problems`), each with an example. `install` adds the shared
components (the Problem schema, the Bearer scheme, the request models) once, and replaces
FastAPI's own validation-error shape, which this API never sends, with ours. Nothing here
changes behaviour: it only describes it. docs/api.md ("OpenAPI conventions") shows the pattern.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from copyledger.api.problems import MEDIA_TYPE, TYPE_BASE

REF = "#/components/schemas/{model}"
BEARER = "bearer"


class FieldError(BaseModel):
    field: str = Field(description="the bad field, by entry path or JSON location")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem: every error this API sends has this shape."""

    model_config = ConfigDict(extra="allow", title="Problem")
    type: str = Field(description=f"{TYPE_BASE}<slug>: an identifier, not promised to resolve")
    title: str
    status: int
    detail: str = Field(description="what went wrong with this request")
    instance: str = Field(description="the request path")
    errors: list[FieldError] | None = Field(
        default=None, description="validation failures only: every bad field")
    missing: list[str] | None = Field(
        default=None, description="POST /v1/claims only: what the regime requires and the "
        "claim lacks")


# For each status an operation may declare: when it is sent, and an example problem
# (slug, title, detail, instance, extra members).
PROBLEM_EXAMPLES: dict[int, tuple[str, str, str, str, str, dict[str, Any]]] = {
    400: ("Malformed multipart body", "http-error",
          "malformed multipart body: a second file part",
          "malformed multipart body: a second file part", "/v1/works", {}),
    401: ("No `Authorization: Bearer` header, or an unknown or revoked key", "unauthorized",
          "Missing or unknown API key", "send 'Authorization: Bearer <api key>'; mint one "
          "with `copyledger keys create --role ...`", "/v1/works", {}),
    403: ("The key's role (or account) may not do this", "forbidden",
          "This API key may not do that", "a platform key may not do this; needs one of: "
          "creator", "/v1/works", {}),
    404: ("Not found", "not-found", "Not found", "no entry with seq 99", "/v1/entries/99", {}),
    409: ("Conflicts with what is already recorded; or, with `Retry-After`, a request under "
          "the same `Idempotency-Key` is still running: retry after that many seconds to get "
          "its answer", "conflict", "Conflict",
          "this request contradicts what is already recorded", "/v1/works", {}),
    413: ("Body over the limit", "payload-too-large", "Request body too large",
          "the limit is 65536 bytes", "/v1/works", {}),
    422: ("Invalid input; nothing was written", "invalid-input", "Invalid input",
          "invalid entry: work_type: must be one of text, image, audio, video, software, "
          "dataset, other", "/v1/works",
          {"errors": [{"field": "work_type", "message": "must be one of text, image, audio, "
                       "video, software, dataset, other"}]}),
    429: ("Rate limited; retry after `Retry-After` seconds", "rate-limited",
          "Too many requests", "at most 50 time-stamp requests a second", "/v1/timestamp", {}),
    503: ("Unavailable; retry after `Retry-After` seconds", "unavailable",
          "Service unavailable", "the sequencer's queue is full; retry shortly", "/v1/works",
          {}),
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these error statuses: application/problem+json, the Problem
    schema, and an example of each."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        when, slug, title, detail, instance, extra = PROBLEM_EXAMPLES[status]
        example = {"type": TYPE_BASE + slug, "title": title, "status": status,
                   "detail": detail, "instance": instance, **extra}
        response: dict[str, Any] = {
            "description": when,
            "content": {MEDIA_TYPE: {"schema": {"$ref": REF.format(model="Problem")},
                                     "example": example}},
        }
        if status in (409, 429, 503):  # on a 409 only for a key still in flight (D131)
            response["headers"] = RETRY_AFTER
        out[status] = response
    return out


def answers(example: Any, status: int = 200, media_type: str = "application/json",
            model: type[BaseModel] | None = None) -> dict[int | str, dict[str, Any]]:
    """A `responses=` entry for the success answer: its example, and `model` for a route with
    `response_model=None` (FastAPI then documents the shape without re-validating the answer).
    FastAPI drops `null` members from examples: what an example shows as null must be optional
    in the model."""
    response: dict[str, Any] = {"content": {media_type: {"example": example}}}
    if model is not None:
        response["model"] = model
    return {status: response}


# openapi_extra: who may call an operation. Every operation carries one of the two, so a
# public read is public on purpose (tests/test_openapi.py checks both against behaviour).
PUBLIC: dict[str, Any] = {"security": []}


def secured(*roles: str) -> dict[str, Any]:
    """openapi_extra for an operation that needs a key with one of `roles` (admin may too)."""
    return {"security": [{BEARER: []}], "x-roles": list(dict.fromkeys([*roles, "admin"]))}


_REQUEST_MODELS: dict[str, type[BaseModel]] = {}


def json_request(model: type[BaseModel], *, multipart: dict[str, Any] | None = None,
                 multipart_example: dict[str, Any] | None = None) -> dict[str, Any]:
    """openapi_extra for a JSON body read by the route itself (it is parsed by
    `deps.json_body`, not by FastAPI), optionally also accepted as multipart/form-data. The
    model's first example is the body's example; its schema joins the components."""
    _REQUEST_MODELS[model.__name__] = model
    example = model.model_json_schema()["examples"][0]
    content: dict[str, Any] = {"application/json": {
        "schema": {"$ref": REF.format(model=model.__name__), "examples": [example]},
        "example": example}}
    if multipart is not None:
        content["multipart/form-data"] = {"schema": multipart, "example": multipart_example}
    return {"requestBody": {"required": True, "content": content}}


def install(app: FastAPI) -> None:
    """Build the document once with the shared components, and without FastAPI's
    HTTPValidationError (every 422 here is a Problem)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version,
                              openapi_version=app.openapi_version, summary=app.summary,
                              description=app.description, routes=app.routes,
                              separate_input_output_schemas=app.separate_input_output_schemas)
            components = doc.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            models: list[type[BaseModel]] = [Problem, *_REQUEST_MODELS.values()]
            _, defs = models_json_schema([(m, "validation") for m in models], ref_template=REF)
            schemas.update(defs.get("$defs", {}))
            components["securitySchemes"] = {BEARER: {
                "type": "http", "scheme": "bearer",
                "description": "An API key from `copyledger keys create --role ROLE "
                "--account NAME`, sent as `Authorization: Bearer <key>`."}}
            for path_item in doc.get("paths", {}).values():
                for op in path_item.values():
                    bad = op.get("responses", {}).get("422", {})
                    if "HTTPValidationError" in str(bad):
                        op["responses"].update({"422": problems(422)[422]})
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
