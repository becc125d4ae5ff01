"""`multipart/form-data` uploads, read as they stream in.

The file part goes straight into a `service.operations.Upload` (hashed and spooled to disk a
megabyte at a time), so its size costs disk, never memory; the text fields together are held
to MAX_FIELDS_BYTES. A malformed form is a 400, as Starlette's parser answered before this one.
Callers authenticate before calling `read_form`, so no unauthenticated body is read at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from copyledger.ledger.errors import InvalidInput, said
from copyledger.service.operations import Upload

FILE_FIELD = "file"
MAX_FIELDS_BYTES = 1 << 20  # the text parts of a form, together
_FLUSH = 1 << 20  # file bytes buffered before one write to the spool


@dataclass
class Form:
    """The fields of a multipart form, and its one file (already hashed and on disk)."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    file: Upload | None = None

    def get(self, name: str) -> str:
        """The field's first value, or ''."""
        values = self.fields.get(name)
        return values[0] if values else ""

    def getlist(self, name: str) -> list[str]:
        return list(self.fields.get(name, []))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _bad(message: str) -> HTTPException:
    """A 400 saying what is wrong with the form, in the request's language (`message` a
    `said(...)`, or the multipart parser's own words, which stay English)."""
    return HTTPException(400, said("malformed multipart body: {message}", message=message))


def is_multipart(content_type: str) -> bool:
    """Whether a Content-Type names a multipart form, as RFC 9110 reads a media type: the
    type and subtype case-insensitively, before any parameter. The body limit and the
    routes must agree: a route reading `Multipart/Form-Data` as not a form read the whole
    body into memory under the limit given to uploads (2 GiB)."""
    return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"


class _Parts:
    """python-multipart callbacks: part headers, field values, and file bytes to flush."""

    def __init__(self, form: Form, max_fields: int, max_field_bytes: int) -> None:
        self.form = form
        self.max_fields = max_fields
        self.field_bytes_left = max_field_bytes
        self.header_name = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.name: str | None = None  # of the current text field; None in the file part
        self.value = bytearray()
        self.pending: list[bytes] = []  # file bytes not yet written to the spool
        self.pending_size = 0

    def on_part_begin(self) -> None:
        self.headers, self.name, self.value = {}, None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]
        if len(self.header_value) > 8192:
            raise _bad(said("a part header is too long"))

    def on_header_end(self) -> None:
        self.headers[self.header_name.strip().lower()] = self.header_value.strip()
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if name is None:
            raise _bad(said("every part needs a Content-Disposition with a name"))
        field_name = name.decode("utf-8", errors="replace")
        if b"filename" in options:
            if field_name != FILE_FIELD or self.form.file is not None:
                raise _bad(said("send one file, as the {name!r} part", name=FILE_FIELD))
            ctype = self.headers.get(b"content-type", b"").decode("latin-1") or None
            self.form.file = Upload(ctype)
            return
        if sum(len(v) for v in self.form.fields.values()) >= self.max_fields:
            raise _bad(said("more than {most} fields", most=self.max_fields))
        self.name = field_name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.name is None:
            self.pending.append(data[start:end])
            self.pending_size += end - start
            return
        self.field_bytes_left -= end - start
        if self.field_bytes_left < 0:
            raise _bad(said("the text parts are over {most} bytes together",
                             most=MAX_FIELDS_BYTES))
        self.value += data[start:end]

    def on_part_end(self) -> None:
        if self.name is not None:
            try:  # strictly: a field in mojibake would be recorded as it reads
                value = self.value.decode("utf-8")
            except UnicodeDecodeError:
                message = said("is not valid UTF-8")
                raise InvalidInput(said("{name}: {message}", name=self.name, message=message),
                                   errors=[{"field": self.name, "message": message}]) from None
            self.form.fields.setdefault(self.name, []).append(value)


async def read_form(request: Request, *, max_fields: int) -> Form:
    """The request's multipart form, the file hashed and on disk by the time this returns.
    The caller closes the form (which deletes the file)."""
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise _bad(said("a multipart/form-data body needs a boundary"))
    form = Form()
    parts = _Parts(form, max_fields, MAX_FIELDS_BYTES)
    parser = MultipartParser(boundary, {
        "on_part_begin": parts.on_part_begin,
        "on_header_field": parts.on_header_field,
        "on_header_value": parts.on_header_value,
        "on_header_end": parts.on_header_end,
        "on_headers_finished": parts.on_headers_finished,
        "on_part_data": parts.on_part_data,
        "on_part_end": parts.on_part_end,
    })

    async def flush(at_least: int) -> None:
        if parts.pending_size >= at_least and form.file is not None:
            chunks, parts.pending, parts.pending_size = parts.pending, [], 0
            await run_in_threadpool(form.file.write, *chunks)

    try:
        async for chunk in request.stream():
            parser.write(chunk)
            await flush(_FLUSH)
        parser.finalize()
        if parser.state != MultipartState.END:  # cut short: the file may be incomplete
            raise _bad(said("the body ended before its closing boundary"))
        await flush(0)
    except FormParserError as e:
        form.close()
        raise _bad(str(e)) from None
    except BaseException:
        form.close()
        raise
    return form
