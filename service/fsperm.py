"""File modes for the data directory, whatever the umask: private directories (0700), and
trust anchors (the log's verifier key) that are refused when someone else could have written
them. The database file's own mode is set where it is opened (`ledger.store.make_engine`)."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from copyledger.ledger.errors import InvalidInput, said

__all__ = ["private_dir", "trusted_text", "write_public"]


def private_dir(path: Path) -> None:
    """Create `path` (and parents) if missing, and make it 0700 if it is ours: the umask may
    have widened a new directory, and an old one may predate this rule."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_uid == os.geteuid():
        os.chmod(path, 0o700)


def write_public(path: Path, text: str) -> None:
    """Write a public file others may read but not change (0644, whatever the umask), at once:
    a temporary file renamed over it. Every process of `serve --workers N` writes the verifier
    key again as it starts, while another may be reading it (D116's check when it takes the
    log's lock): a reader sees the old text or the new, never an empty file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def trusted_text(path: Path, root: Path) -> str:
    """The text of `path`, a file this process trusts (a verifier key), if neither it nor any
    directory from `root` down to it can be written by anyone but its owner, us or root.
    Otherwise refuse: anyone who could write it could substitute their own key."""
    here = root.resolve()
    target = path.resolve()
    chain = [target, *(p for p in target.parents if p == here or here in p.parents)]
    for p in chain:
        st = p.stat()
        if st.st_uid not in (os.geteuid(), 0):
            raise InvalidInput(said("{p} belongs to another user (uid {st_uid}), so {path} cannot "
                                    "be trusted: `chown {geteuid} {p}`",
                                    p=p, st_uid=st.st_uid, path=path, geteuid=os.geteuid()))
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise InvalidInput(said("{p} can be written by other users (mode {s_imode:04o}), so "
                                    "{path} cannot be trusted: `chmod go-w {p}` (the data "
                                    "directory should be 0700)",
                                    p=p, s_imode=stat.S_IMODE(st.st_mode), path=path))
    return target.read_text()
