"""Parts a feature needs that may arrive after the server is up.

`make run` serves within seconds on a fresh machine and finishes what takes minutes in the
background (D45): FFmpeg and libchromaprint (audio and video fingerprints) and the
certificate's fonts from Debian, pdqhash (PDQ image hashes) built from source, and the large
wheels only fingerprints and the near-duplicate index use (NumPy, SciPy, OpenCV, FAISS: D58).
It sets INSTALLING_ENV to a marker file that exists while that step runs and reads
LIBRARIES_PENDING while those wheels are not in yet. A feature whose part is not there yet
answers `Unavailable` (503 with Retry-After) saying so, never a degraded answer; one whose part
is absent for good says what installs it.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from copyledger.ledger.errors import Said, Unavailable, said

INSTALLING_ENV = "COPYLEDGER_INSTALLING"
"""Path of the marker file that `make run`'s background step removes when it is done."""

PDQHASH = "pdqhash (PDQ image hashes)"
"""The part image and video fingerprints need: pdqhash has no Linux wheel, so it is built."""

MATCHING = "the matching libraries (NumPy, SciPy, OpenCV, FAISS)"
"""The part fingerprints and the near-duplicate index need: `make run` installs these wheels
(about 400 of the serving venv's 580 MB) after the server is up (D58)."""

LIBRARIES_PENDING = "libraries"
"""What the marker file says until the background step has installed the MATCHING wheels."""

FFMPEG = "FFmpeg (Debian: ffmpeg)"
"""The part audio and video fingerprints need to decode media."""

CHROMAPRINT = "Chromaprint (Debian: libchromaprint1)"
"""The part audio fingerprints need (pyacoustid loads the system library)."""

FONTS = "The certificate's fonts (Debian: fonts-dejavu-core, fonts-wqy-microhei)"
"""The part the PDF certificate needs (DejaVu, and WenQuanYi Micro Hei for zh-CN)."""

PARTS = (PDQHASH, MATCHING, FFMPEG, CHROMAPRINT, FONTS)
"""Every part's name: catalogue msgids, so a 503 names the part in the reader's language."""

RETRY_INSTALLING = 30
"""Seconds a client is told to wait while a part is being installed."""

RETRY_ABSENT = 3600
"""Seconds a client is told to wait for a part this machine lacks (an operator must act)."""


def installing() -> bool:
    """True while `make run` is still installing parts in the background."""
    marker = os.environ.get(INSTALLING_ENV, "")
    return bool(marker) and Path(marker).exists()


def libraries_pending() -> bool:
    """True until `make run`'s background step has installed the MATCHING wheels. Until then
    they are not imported at all: a package half unpacked could import half (D58)."""
    marker = os.environ.get(INSTALLING_ENV, "")
    try:
        return bool(marker) and LIBRARIES_PENDING in Path(marker).read_text()
    except OSError:
        return False


def missing(part: str) -> Unavailable:
    """The error for a feature that needs `part` (one of `PARTS`), which is not there. The
    part's name is said in the reader's language too (a nested `said`)."""
    name = Said(part)
    if installing():
        return Unavailable(said("{part} is still being installed (make run finishes it in the "
                                "background); try again in {retry_installing} s",
                                part=name, retry_installing=RETRY_INSTALLING),
                           retry_after=RETRY_INSTALLING)
    return Unavailable(said("{part} is not installed on this server (make run or make system-deps "
                            "installs it)",
                            part=name), retry_after=RETRY_ABSENT)


def load(module: str, part: str) -> ModuleType:
    """Import an optional module, or raise `missing(part)`. Import caches are invalidated
    first, so a module installed while the server runs is found on the next request."""
    try:
        return importlib.import_module(module)
    except ImportError:
        importlib.invalidate_caches()
        try:
            return importlib.import_module(module)
        except ImportError:
            raise missing(part) from None


def require(part: str, *modules: str) -> None:
    """Raise `missing(part)` unless every module imports: checked before work that would
    otherwise fail half way (a registration, a claim check). While the MATCHING wheels are
    still pending, `part` is missing whatever is importable."""
    if part == MATCHING and libraries_pending():
        raise missing(part)
    for module in modules:
        load(module, part)
