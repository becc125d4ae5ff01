"""What a client call can fail with, inside the project's one hierarchy.

`ProblemError`: the server answered with an RFC 9457 problem (or another error status).
`TransportError`: no answer at all (connection refused, timeout, bad URL).
`ResponseError`: an answer, but not the one the API promises (not JSON, wrong shape).
`UnverifiedAnswer`: the answer arrived but does not verify against the pinned keys; it is a
`VerificationError`, and keeps the answer so the caller can report or keep it.
No httpx exception ever escapes a client call.
"""

from __future__ import annotations

from typing import Any

from copyledger.ledger.errors import CopyledgerError, VerificationError

__all__ = ["ClientError", "ProblemError", "ResponseError", "TransportError", "UnverifiedAnswer"]


class ClientError(CopyledgerError):
    """A call to a registry did not produce a usable answer. `idempotency_key`: the key a
    write was sent under (the caller's, or the one the client made, D131), to send it again
    by hand under the same key; None for a call sent without one. `idempotency_keys`: for a
    batch, each work's key in order (None for a work sent without one)."""

    idempotency_key: str | None = None
    idempotency_keys: tuple[str | None, ...] | None = None



class ProblemError(ClientError):
    """The server refused the request. The problem's members are kept as the server sent them:
    `status`, `type`, `title`, `detail`, `instance`, and any others (`errors`, `missing`…)
    in `extra`."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type: str = "about:blank",
        title: str = "",
        instance: str | None = None,
        is_problem: bool = True,
        **extra: object,
    ) -> None:
        super().__init__(detail, **extra)
        self.is_problem = is_problem  # False: the body was not problem+json (a proxy's page)
        self.status = status
        self.type = type
        self.title = title
        self.instance = instance
        self.slug = type.rsplit("/", 1)[-1]

    @classmethod
    def from_response(cls, status: int, body: bytes) -> ProblemError:
        """A problem from an error answer; a body that is not a problem+json object is kept
        (its first 200 characters) as the detail."""
        import json

        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            return cls(status, body.decode("utf-8", "replace")[:200], is_problem=False)
        return cls.from_problem(status, doc)

    @classmethod
    def from_problem(cls, status: int, doc: dict[str, Any]) -> ProblemError:
        """A problem from its decoded document (a batch item's `problem`)."""
        members = {k: v for k, v in doc.items()
                   if k not in ("status", "type", "title", "detail", "instance")}
        return cls(status, str(doc.get("detail")), type=str(doc.get("type", "about:blank")),
                   title=str(doc.get("title")), instance=doc.get("instance"), **members)

    def __str__(self) -> str:
        """`401 Missing or unknown API key: no Authorization header` — what the CLI prints."""
        if not self.is_problem:
            return f"{self.status} {self.detail}"
        return f"{self.status} {self.title}: {self.detail}"


class TransportError(ClientError):
    """The registry could not be reached, or the exchange broke off."""


class ResponseError(ClientError):
    """The registry answered, but not with what the API promises."""


class UnverifiedAnswer(VerificationError):
    """The answer does not verify. `answer` is what the server sent (parsed JSON or text);
    `idempotency_key` and `idempotency_keys` as for ClientError."""

    idempotency_key: str | None = None
    idempotency_keys: tuple[str | None, ...] | None = None

    def __init__(self, detail: str, answer: Any) -> None:
        super().__init__(detail)
        self.answer = answer
