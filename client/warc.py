"""WARC captures as evidence: hash the whole file and each response record's payload, so a
court can check one captured page out of a crawl without trusting the rest of it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from copyledger.ledger.errors import InvalidInput, said

MAX_RECORDS = 60  # what fits in one entry (MAX_ENTRY_BYTES) with room for the other fields


def warc_records(path: Path) -> list[dict[str, Any]]:
    """One item per `response` record: target URI, WARC date, record ID and the SHA-256 of
    the HTTP payload as captured (the body after de-chunking and decompression is NOT used:
    the raw payload bytes are what the WARC holds and what anyone can re-hash)."""
    from warcio.archiveiterator import ArchiveIterator  # type: ignore[import-untyped]
    from warcio.exceptions import ArchiveLoadFailed  # type: ignore[import-untyped]

    out: list[dict[str, Any]] = []
    try:
        with path.open("rb") as f:
            for rec in ArchiveIterator(f):
                if not str(rec.format).startswith("warc"):
                    raise InvalidInput(said("{path}: not a WARC file (found {format} data)",
                                            path=path, format=rec.format))
                if rec.rec_type != "response":
                    continue
                if not rec.rec_headers.get_header("WARC-Target-URI"):
                    raise InvalidInput(said("{path}: a response record has no WARC-Target-URI",
                                            path=path))
                h = hashlib.sha256()
                stream = rec.raw_stream
                while chunk := stream.read(1 << 16):
                    h.update(chunk)
                if getattr(stream, "limit", 0):  # bytes its Content-Length promised, missing
                    raise InvalidInput(said(
                        "{path}: the response record for {uri} is cut short ({missing} bytes "
                        "of its payload missing): is the crawl still being written?", path=path,
                        uri=rec.rec_headers.get_header("WARC-Target-URI"),
                        missing=stream.limit))
                out.append({
                    "target_uri": rec.rec_headers.get_header("WARC-Target-URI"),
                    "warc_date": rec.rec_headers.get_header("WARC-Date"),
                    "record_id": rec.rec_headers.get_header("WARC-Record-ID"),
                    "payload_sha256": h.hexdigest(),
                })
    except (ArchiveLoadFailed, ValueError, OSError) as e:
        raise InvalidInput(said("{path}: not a readable WARC file ({e})", path=path, e=e)) from None
    if not out:
        raise InvalidInput(said("{path}: the WARC file holds no response records", path=path))
    if len(out) > MAX_RECORDS:
        raise InvalidInput(
            said("{path}: {count} response records; one deposit lists at most {limit}. "
                 "Split the crawl (e.g. one WARC per page) and deposit each part.",
                 path=path, count=len(out), limit=MAX_RECORDS)
        )
    return out
