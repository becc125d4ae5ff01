"""What a notary signs: checkpoints, block notes and claim-check answers of its own log, and
a checkpoint only if it extends the last one signed (D18)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from copyledger.ledger import claims, note
from copyledger.ledger.errors import Conflict, CopyledgerError, InvalidInput, ProofError
from copyledger.ledger.merkle import Consistency
from copyledger.notary.signer import replace_file

__all__ = ["CheckpointGuard", "check_signable"]

T = TypeVar("T")


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


class CheckpointGuard:
    """The last checkpoint signed for one origin, and the rule that the next one extends it:
    no smaller tree, no other root for the same size, and a bigger tree only with a valid
    consistency proof from the last one. The memory is per origin, not per key, because it is
    the log that must not fork: a rotated key continues the same tree.

    With a `path` the memory is durable (the stand-alone notary): `sign` writes it, with fsync
    and an atomic rename, before the signature is returned. Without one it lives in memory and
    the caller says what to remember (the in-process notary remembers what the log committed).
    """

    def __init__(self, origin: str, path: Path | None = None) -> None:
        self.origin = origin
        self.path = path
        self.last: note.Checkpoint | None = None
        self._lock = threading.Lock()
        if path is not None and path.exists():
            self.last = self._read(path)

    def _read(self, path: Path) -> note.Checkpoint:
        try:
            cp = note.parse_checkpoint(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, InvalidInput) as e:
            raise InvalidInput(f"cannot read the last signed checkpoint at {path}: {e}") from None
        if cp.origin != self.origin:
            raise InvalidInput(f"{path} is a checkpoint of {cp.origin!r}, not {self.origin!r}")
        return cp

    def admit(self, new: note.Checkpoint, consistency: Consistency | None) -> None:
        """Conflict (or InvalidInput, for a missing proof) unless `new` may be signed."""
        last = self.last
        if new.origin != self.origin:
            raise InvalidInput(f"refused: a checkpoint of {new.origin}, not {self.origin}")
        if last is not None:
            if new.size < last.size:
                raise Conflict(f"refused: tree size {new.size} is smaller than {last.size}, "
                               f"the last checkpoint signed")
            if new.size == last.size and new.root != last.root:
                raise Conflict(f"refused: tree size {new.size} was signed with another root")
            if consistency is None:
                if new.size == last.size:
                    return  # the same tree again: nothing to prove
                raise InvalidInput(f"refused: a tree bigger than the last one signed (size "
                                   f"{last.size}) needs a consistency proof from it")
            if (consistency.old_size, consistency.old_root) != (last.size, last.root):
                raise Conflict(f"refused: the consistency proof starts from tree size "
                               f"{consistency.old_size}, but the last checkpoint signed is "
                               f"size {last.size}, root {last.root.hex()}")
        if consistency is not None:  # with no memory yet, a proof given is still checked
            try:
                consistency.verify(new.size, new.root)
            except ProofError as e:
                raise Conflict(f"refused: the consistency proof does not hold: {e}") from None

    def remember(self, cp: note.Checkpoint) -> None:
        """Make `cp` the last checkpoint signed (durably, with a path)."""
        if self.path is not None:
            replace_file(self.path, note.format_checkpoint(cp).encode(), 0o600)
        self.last = cp

    def sign(self, new: note.Checkpoint, consistency: Consistency | None,
             sign: Callable[[], T]) -> T:
        """Admit `new`, sign it, and remember it before the signature is returned."""
        with self._lock:
            self.admit(new, consistency)
            signature = sign()
            self.remember(new)
            return signature
