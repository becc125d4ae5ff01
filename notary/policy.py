"""What a notary signs: checkpoints, block notes and claim-check answers of its own log."""

from __future__ import annotations

from collections.abc import Callable

from copyledger.ledger import claims, note
from copyledger.ledger.errors import CopyledgerError, InvalidInput


def check_signable(message: bytes, origin: str) -> str:
    """The notary signs checkpoints, block notes and claim-check answers of its own log,
    nothing else."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("refused: not UTF-8 note text") from None
    readers: tuple[tuple[str, Callable[[str], str]], ...] = (
        ("checkpoint", lambda t: note.parse_checkpoint(t).origin),
        ("block note", lambda t: note.parse_block_note_text(t)[0]),
        ("claim-check answer", lambda t: claims.parse_check_note_text(t)[0]),
    )
    for what, origin_of in readers:
        try:
            if origin_of(text) == origin:
                return what
        except CopyledgerError:
            continue
    raise InvalidInput(f"refused: only checkpoints, block notes and claim-check answers of "
                       f"{origin} are signed")
