"""The OpenAPI description is a contract a client generator can use (issue #14 item 1): a valid
document, every operation with its security, examples and problem responses, the closed sets
as enums, and each of these claims checked against what the server actually does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from copyledger.ledger import claims
from copyledger.ledger.entry import TRANSFER_TYPES, WORK_TYPES
from copyledger.service.apikeys import ROLES, create_key, revoke_key
from copyledger.service.node import Node

PROBLEM = "application/problem+json"
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def doc(client: TestClient) -> dict[str, Any]:
    spec: dict[str, Any] = client.get("/openapi.json").json()
    return spec


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield method, path, op


def schema_of(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with the document's components beside it, so its $refs resolve."""
    return {**schema, "components": doc["components"]}


def test_the_document_is_valid_openapi(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids)), "operation ids name the generated client's functions"
    # FastAPI's own validation-error shape is never sent, so it is never described
    assert "HTTPValidationError" not in str(doc)


def test_every_operation_declares_security_examples_and_problems(doc: dict[str, Any]) -> None:
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"]}
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for method, path, op in operations(doc):
        where = f"{method.upper()} {path}"
        assert "security" in op, f"{where}: neither secured nor explicitly public"
        assert op["security"] in ([], [{"bearer": []}]), where
        for media, content in op.get("requestBody", {}).get("content", {}).items():
            assert "example" in content or content["schema"].get("format") == "binary", \
                f"{where}: no example for its {media} body"
        assert any(s.startswith("2") for s in op["responses"]), where
        for status, response in op["responses"].items():
            for media, content in response.get("content", {}).items():
                if status.startswith("2"):
                    assert "example" in content or content.get("schema", {}).get(
                        "format") == "binary", f"{where}: no example for {status} {media}"
                    continue
                assert media == PROBLEM, f"{where} {status}: {media}"
                assert content["schema"] == problem_ref, f"{where} {status}"
                example = content["example"]
                assert example["status"] == int(status), f"{where} {status}"
                OAS31Validator(schema_of(doc, problem_ref)).validate(example)
            if not status.startswith("2"):
                assert PROBLEM in response.get("content", {}), f"{where} {status}"


def test_every_example_fits_its_schema(doc: dict[str, Any]) -> None:
    checked = 0
    for _, _, op in operations(doc):
        bodies = [c for r in op["responses"].values() for c in r.get("content", {}).values()]
        bodies += list(op.get("requestBody", {}).get("content", {}).values())
        for content in bodies:
            if "example" in content and "schema" in content and \
                    content["schema"].get("format") != "binary":
                OAS31Validator(schema_of(doc, content["schema"])).validate(content["example"])
                checked += 1
    assert checked >= 40, checked


def path_value(op: dict[str, Any], name: str) -> str:
    """A path parameter's first allowed value if it is a closed set, else 0."""
    for p in op.get("parameters", []):
        if p["in"] == "path" and p["name"] == name and "enum" in p["schema"]:
            return str(p["schema"]["enum"][0])
    return "0"


def test_security_as_described_is_what_the_server_enforces(
        client: TestClient, reg: Node, doc: dict[str, Any]) -> None:
    """Without a key, a secured operation answers 401 and a public one never does; a key of a
    role the operation lists (`x-roles`) gets past authorisation, any other gets 403."""
    keys = {role: create_key(reg.store, role, f"{role}-account")[0] for role in ROLES}

    def send(method: str, url: str, key: str | None) -> Any:
        headers = {"content-type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return client.request(method.upper(), url, content=b"{}", headers=headers)

    for method, path, op in operations(doc):
        where = f"{method.upper()} {path}"
        url = re.sub(r"\{([^}]+)\}", lambda m, op=op: path_value(op, m[1]), path)
        r = send(method, url, None)
        if not op["security"]:
            assert r.status_code != 401, where
            continue
        assert r.status_code == 401, f"{where}: {r.status_code}"
        assert r.headers["content-type"] == PROBLEM
        for role, key in keys.items():
            status = send(method, url, key).status_code
            if role in op["x-roles"]:
                assert status not in (401, 403), f"{where} as {role}: {status}"
            else:
                assert status == 403, f"{where} as {role}: {status}"


def test_request_examples_are_accepted(client: TestClient, reg: Node, doc: dict[str, Any]) -> None:
    """The documented request examples are real: sent as they are, each is accepted."""
    creator, _ = create_key(reg.store, "creator", "ada")
    platform, _ = create_key(reg.store, "platform", "tube")
    create_key(reg.store, "creator", "harbour-press")  # the transfer example's recipient
    ops = {path: op for _, path, op in operations(doc)}
    for path, key, status in (("/v1/works", creator, 201), ("/v1/evidence", creator, 201),
                              ("/v1/transfers", creator, 201), ("/v1/claims", platform, 201),
                              ("/v1/claims/check", platform, 200)):
        example = ops[path]["requestBody"]["content"]["application/json"]["example"]
        r = client.post(path, json=example, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == status, (path, r.json())


def test_closed_sets_are_enums(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]

    def enum(model: str, field: str) -> list[str]:
        prop = schemas[model]["properties"][field]
        options = prop.get("anyOf", [prop])
        values: list[str] = next(o["enum"] for o in options if "enum" in o)
        return values

    assert enum("WorkIn", "work_type") == list(WORK_TYPES)
    assert enum("TransferIn", "transfer_type") == list(TRANSFER_TYPES)
    assert enum("ClaimIn", "regime") == list(claims.REGIMES)
    assert enum("ClaimIn", "notice_type") == list(claims.NOTICE_TYPES)
    assert enum("ClaimIn", "requested_action") == list(claims.ACTIONS)
    assert schemas["ClaimIn"]["properties"]["claimant"]["properties"]["authority"]["enum"] == \
        list(claims.AUTHORITIES)
    assert enum("WhoamiOut", "role") == list(ROLES)
    assert enum("ClaimCheckOut", "verdict") == ["match", "possible", "none"]
    assert enum("Link", "kind") == ["work", "transfer", "acceptance", "withdrawal"]
    assert enum("Match", "algorithm") == ["sha256", "pdq", "phash", "minhash", "orb",
                                         "chromaprint", "vpdq"]


def test_a_refusal_lists_every_problem_and_every_allowed_value(
        client: TestClient, reg: Node) -> None:
    """No message cuts the list short ("(and 1 more)"): the detail alone says what to send."""
    platform, _ = create_key(reg.store, "platform", "tube")
    r = client.post("/v1/claims", json={"regime": "dmca", "notice_type": "warning",
                                        "claimant": {"name": "A"}},
                    headers={"Authorization": f"Bearer {platform}"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "more)" not in detail
    for value in (*claims.REGIMES, *claims.NOTICE_TYPES):
        assert value in detail


# ------------------------------------------------------------------ who am I


def test_whoami_names_the_keys_account_and_role_never_the_key(
        client: TestClient, reg: Node) -> None:
    for role in ROLES:
        secret, row = create_key(reg.store, role, f"{role}-account")
        r = client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 200, r.text
        assert r.json() == {"account": f"{role}-account", "role": role, "key_id": row.id,
                            "key_prefix": row.prefix, "created_at": row.created_at}
        assert secret not in r.text
    assert client.get("/v1/whoami").status_code == 401
    revoked, row = create_key(reg.store, "creator", "gone")
    revoke_key(reg.store, row.id)
    r = client.get("/v1/whoami", headers={"Authorization": f"Bearer {revoked}"})
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM

