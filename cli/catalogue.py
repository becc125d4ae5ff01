"""`copyledger import`: a catalogue of works by hash (JSON Lines or CSV), read in chunks for the
batch endpoint, with a progress file so an interrupted import resumes where it stopped.

Resuming is safe without the progress file too: a work this account already registered is
answered with its earlier registration (D36), so a chunk sent twice writes nothing twice; a row
sent `again` (which D36 does not answer) goes under an Idempotency-Key made from the row itself
(`row_key`), the same on every run, so it too is written once (D162). The file only saves
sending the finished chunks again."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from copyledger.client import BatchWork
from copyledger.client._calls import strict_json
from copyledger.ledger.errors import said
from copyledger.service.idempotency import request_hash

FIELDS = ("sha256", "title", "creators", "work_type", "size", "media_type", "license",
          "metadata", "fingerprints", "again")
CSV_LISTS = ";"  # creators in a CSV cell: "Ada Example;Bob Example"


@dataclass(frozen=True)
class Row:
    """One line of the catalogue: its number (from 1) and the work, or why it cannot be sent."""

    line: int
    work: BatchWork | None
    error: str | None = None


def read_rows(path: Path, skip: int = 0) -> Iterator[Row]:
    """The catalogue's works, line by line: `.csv` (a header row naming the columns), else
    JSON Lines (one object a line; blank lines skipped), after the first `skip` rows (those a
    resumed import already finished: JSON Lines are skipped unread)."""
    if path.suffix.lower() == ".csv":
        rows = _csv_rows(path)
        for _ in range(skip):
            next(rows, None)
        yield from rows
    else:
        yield from _jsonl_rows(path, skip)


def count_rows(path: Path) -> int:
    """How many rows `read_rows` yields, without reading JSON Lines' values."""
    if path.suffix.lower() == ".csv":
        return sum(1 for _ in _csv_rows(path))
    with path.open("rb") as f:
        return sum(1 for raw in f if raw.strip())


def _jsonl_rows(path: Path, skip: int = 0) -> Iterator[Row]:
    # Read as bytes, each line decoded on its own: one line that is not UTF-8 is that row's
    # refusal, not the end of the import (and of every resumed run, at the same line).
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            if skip:
                skip -= 1
                continue
            try:
                doc = json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError) as e:  # (UnicodeDecodeError is a ValueError)
                yield Row(n, None, said("not JSON: {why}", why=e))
                continue
            yield _row(path, n, doc)


def _csv_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8", newline="") as f:
        for n, rec in enumerate(csv.DictReader(f), 2):  # line 1 is the header
            if None in rec or None in rec.values():  # more cells than the header, or fewer:
                names = len(rec) - (None in rec)  # (a comma in a cell not quoted, say)
                cells = (names + len(rec[None]) if None in rec
                         else sum(v is not None for v in rec.values()))
                yield Row(n, None, said("{cells} cells where the header names {names}",
                                        cells=cells, names=names))
                continue
            doc: dict[str, Any] = {k: v for k, v in rec.items() if v != ""}
            try:
                if "creators" in doc:
                    doc["creators"] = [c.strip() for c in doc["creators"].split(CSV_LISTS)]
                if "size" in doc:
                    doc["size"] = int(doc["size"])
                for name in ("metadata", "fingerprints"):
                    if name in doc:
                        doc[name] = json.loads(doc[name])
                if "again" in doc:
                    doc["again"] = doc["again"].lower() in ("true", "1")
            except ValueError as e:
                yield Row(n, None, said("bad cell: {why}", why=e))
                continue
            yield _row(path, n, doc)


def _row(path: Path, n: int, doc: Any) -> Row:
    if not isinstance(doc, dict):
        return Row(n, None, said("not a JSON object"))
    unknown = sorted(set(doc) - set(FIELDS))
    if unknown:
        return Row(n, None, said("unknown fields: {unknown} (known: {known})",
                                 unknown=", ".join(unknown), known=", ".join(FIELDS)))
    try:  # what the client would refuse to send: the row's own refusal, not the chunk's
        strict_json(doc)
    except (ValueError, TypeError) as e:  # NaN, an integer past 2**53 - 1, too deep
        return Row(n, None, said("not JSON the registry takes: {why}", why=e))
    work = BatchWork(**doc)  # type: ignore[typeddict-item]
    if doc.get("again"):
        work["idempotency_key"] = row_key(path, n, work)
    return Row(n, work)


def sent_item(work: BatchWork) -> dict[str, Any]:
    """The batch item the registry reads for `work` (its members but the null ones, and its
    key apart), whose canonical bytes a kept answer is matched by (`api.batch`)."""
    return {k: v for k, v in work.items() if v is not None and k != "idempotency_key"}


def row_key(path: Path, line: int, work: BatchWork) -> str:
    """The Idempotency-Key of a row sent `again`: from the catalogue's path, the row's line
    and its content, so every run of an import sends that row under the same key (a resumed
    run's resend of a chunk the registry wrote but the progress file did not record writes it
    once), and no other row or catalogue shares it."""
    h = hashlib.sha256(f"{path.resolve()}\n{line}\n".encode())
    h.update(orjson.dumps(sent_item(work), option=orjson.OPT_SORT_KEYS))
    return f"import-{h.hexdigest()[:48]}"


def row_claim(account: str, work: BatchWork) -> tuple[str, str, str] | None:
    """What the registry records a keyed row's entry under (account, key, request), as
    `POST /v1/works/batch` records it (D132): an `import --local` of the row resent by any
    run, over HTTP or not, is then written once (the sequencer's check, D134). None for a row
    with no key."""
    key = work.get("idempotency_key")
    if key is None:
        return None
    body = orjson.dumps(sent_item(work), option=orjson.OPT_SORT_KEYS)
    return account, key, request_hash(b"/v1/works/batch", b"", body)


@dataclass
class ImportProgress:
    """The progress file beside the catalogue: one JSON line per finished chunk, the last one
    (complete) telling how many rows are done. A line cut short by a kill is ignored. The
    refused rows stay in the file, not in memory (`refusals`): an import may refuse millions
    (D152)."""

    path: Path
    done: int = 0
    registered: int = 0
    already: int = 0
    refused: int = 0

    @classmethod
    def load(cls, path: Path) -> ImportProgress:
        """The progress recorded in `path` (none if it does not exist); read only."""
        p = cls(path)
        for doc in p._records():
            p.done, p.registered, p.already = doc["done"], doc["registered"], doc["already"]
            p.refused += len(doc["refused"])
        return p

    def _records(self) -> Iterator[dict[str, Any]]:
        """The file's complete, well-formed lines, in order, read one at a time."""
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as f:
            for raw in f:
                try:
                    doc = json.loads(raw)
                    for name in ("done", "registered", "already"):
                        doc[name] = int(doc[name])
                    if isinstance(doc["refused"], list):
                        yield doc
                except (ValueError, KeyError, TypeError):
                    continue

    def refusals(self) -> Iterator[dict[str, Any]]:
        """Every refused row recorded (`{"line", "problem"}`), in the order the chunks
        finished, each chunk's by line: read from the file as they are wanted."""
        for doc in self._records():
            yield from doc["refused"]

    def advance(self, rows: int, registered: int, already: int,
                refused: list[dict[str, Any]]) -> None:
        """Record a finished chunk (appended and flushed: a kill loses at most the chunk). If
        the file's last line was cut short (a kill, a full disk), this one starts on a line of
        its own, so it is not glued to that one and lost with it."""
        self.done += rows
        self.registered += registered
        self.already += already
        self.refused += len(refused)
        line = json.dumps({"done": self.done, "registered": self.registered,
                           "already": self.already, "refused": refused}) + "\n"
        with self.path.open("a+b") as f:  # (appends, wherever it last read)
            end = f.seek(0, 2)
            if end:
                f.seek(end - 1)
                if f.read(1) != b"\n":
                    line = "\n" + line
            f.write(line.encode())


class Listing(list[Any]):
    """A list whose items are read once, as they are written: `json`'s own (pure Python)
    encoder iterates a list, so a summary listing millions of rows is written without holding
    them (`cli.main._emit_streamed`, D152). Whether it is empty is known by reading its first
    item ahead; its length is not known."""

    def __init__(self, items: Iterable[Any]) -> None:
        super().__init__()
        self._rest = iter(items)
        self._first = next(self._rest, _NOTHING)

    def __bool__(self) -> bool:
        return self._first is not _NOTHING

    def __iter__(self) -> Iterator[Any]:
        if self._first is not _NOTHING:
            yield self._first
            yield from self._rest


_NOTHING = object()
