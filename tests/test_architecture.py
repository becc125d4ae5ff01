"""The layering of docs/decisions.md D24, checked on the source: each folder imports only the
folders below it; HTTP and the CLI build no entry, touch neither the store nor the sequencer,
and compute no fingerprint; no route imports another."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

ALLOWED = {
    "ledger": {"ledger"},
    "notary": {"ledger", "notary"},
    "matching": {"ledger", "matching"},
    "service": {"ledger", "notary", "matching", "service"},
    "client": {"ledger", "matching", "client"},
    "api": {"ledger", "notary", "service", "api"},
    "cli": {"ledger", "service", "client", "api", "cli"},
}
# What an adapter must leave to the service: building entries, the store, the sequencer,
# computing fingerprints.
ADAPTER_FORBIDDEN = ("copyledger.ledger.entry", "copyledger.ledger.store",
                     "copyledger.ledger.sequencer", "copyledger.matching")


def _imports(path: Path) -> Iterator[str]:
    """Every module a file imports, at any depth (imports inside functions count)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def _files(layer: str) -> list[Path]:
    return sorted((REPO / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_folder_imports_only_those_below_it(layer: str) -> None:
    bad = []
    for f in _files(layer):
        for mod in _imports(f):
            parts = mod.split(".")
            if parts[0] in ALLOWED and parts[0] != "copyledger":
                bad.append(f"{f.relative_to(REPO)}: bare import {mod}")
            if parts[0] == "copyledger" and len(parts) > 1 and parts[1] in ALLOWED \
                    and parts[1] not in ALLOWED[layer]:
                bad.append(f"{f.relative_to(REPO)}: {mod}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("layer", ["api", "cli"])
def test_adapters_leave_entries_store_sequencer_and_fingerprints_to_the_service(
        layer: str) -> None:
    bad = [f"{f.relative_to(REPO)}: {mod}" for f in _files(layer) for mod in _imports(f)
           if any(mod == x or mod.startswith(x + ".") for x in ADAPTER_FORBIDDEN)]
    assert not bad, "\n".join(bad)


def test_no_route_imports_another() -> None:
    bad = [f"{f.name}: {mod}" for f in _files("api/routes") for mod in _imports(f)
           if mod.startswith("copyledger.api.routes")]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f() -> None:\n    from copyledger.ledger.store import Store\n")
    assert "copyledger.ledger.store.Store" in set(_imports(src))
