"""Audio and video decoding with FFmpeg, and Chromaprint fingerprints of the sound.

FFmpeg (a subprocess, Debian's `ffmpeg`) decodes any container we sniff to mono 16-bit PCM at
Chromaprint's own rate, streamed in chunks into libchromaprint (through pyacoustid's binding),
so memory does not grow with the length of the media; the decode has a deadline and reads at
most MAX_MEDIA_SECONDS. FFmpeg may use only the demuxers in DEMUXERS: never a playlist or
concat demuxer, which would read other files or URLs named inside a hostile upload. It decodes
on one thread and refuses video frames over MAX_PIXELS before allocating them (a 700 KB clip
of 8192x8192 frames took 95 s of CPU and 1.1 GB). Its log is drained as it is written, so
however much a corrupt file makes it say, the decode never stalls on a full stderr pipe.

Chromaprint gives one 32-bit sub-fingerprint every ITEM_SECONDS (~0.124 s); an entry keeps the
high 16 bits of each (D38: 969 bytes a minute, so a track fits the 16 KiB entry), at most
MAX_AUDIO_ITEMS of them, from the start of the media.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Generator
from contextlib import closing
from pathlib import Path
from typing import IO, Any

from copyledger.ledger.components import CHROMAPRINT, FFMPEG, MATCHING, load, missing, require
from copyledger.ledger.errors import InvalidInput, said
from copyledger.ledger.fingerprint import (
    CHROMAPRINT_SCHEME,
    MAX_AUDIO_ITEMS,
    MAX_MEDIA_SECONDS,
    Fingerprints,
)

__all__ = [
    "DECODE_TIMEOUT",
    "DEMUXERS",
    "ITEM_SECONDS",
    "MAX_FRAME",
    "MAX_PIXELS",
    "SAMPLE_RATE",
    "Progress",
    "audio_fingerprints",
    "chromaprint_items",
    "ffmpeg_stream",
    "items_of",
]

SAMPLE_RATE = 11025
"""Chromaprint resamples to this rate itself; decoding straight to it saves the work."""
ITEM_SECONDS = 4096 / 3 / SAMPLE_RATE
"""Chromaprint's hop: one sub-fingerprint per 1365.33 samples at 11,025 Hz."""
DECODE_TIMEOUT = 900.0
"""Seconds one decode may take (a 4-hour film decodes at ~100x real time here)."""
MAX_FRAME = (7680, 4320)
MAX_PIXELS = MAX_FRAME[0] * MAX_FRAME[1]
"""Pixels a video frame may have (MAX_FRAME, 8K UHD, and its like: what cameras record):
FFmpeg's decoder refuses a larger frame before allocating it, and the upload is refused as too
large. One thread decodes, so a frame costs at most ~50 MB however many cores there are."""
DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,ogg,mp3,flac,wav,aiff,avi,aac,asf,mpegts"
_CHUNK = 1 << 16
_LOG_BYTES = 4096
"""Of FFmpeg's log, the first and the last this many bytes are kept (for the error message)."""
_TOO_LARGE = re.compile(rb"Picture size (\d+)x(\d+) exceeds specified max pixel count")

Source = Path | IO[bytes]
Progress = Callable[[float], None]
"""Called with the seconds of media decoded so far (the CLI's progress bar)."""


def ffmpeg_stream(source: Source, output: list[str],
                  chunk: int = _CHUNK) -> Generator[bytes, None, None]:
    """Raw bytes FFmpeg writes for `output` options (filters, `-f` format), chunk by chunk.

    `source` is a path or a seekable file (an upload's spool file: FFmpeg opens it through
    /dev/stdin, so MP4s whose index sits at the end still decode). A decode that FFmpeg
    refuses, or that overruns DECODE_TIMEOUT, raises InvalidInput.
    """
    if isinstance(source, Path):
        yield from _run(str(source), subprocess.DEVNULL, output, chunk)
        return
    try:
        source.fileno()
    except (AttributeError, OSError):  # in memory (io.BytesIO): FFmpeg needs a real file
        with tempfile.TemporaryFile() as spool:
            source.seek(0)
            shutil.copyfileobj(source, spool)
            spool.seek(0)
            yield from _run("/dev/stdin", spool, output, chunk)
        return
    source.seek(0)
    yield from _run("/dev/stdin", source, output, chunk)


class _Log:
    """FFmpeg's stderr, read by a thread as it is written (a pipe nobody reads fills at 64 KiB
    and blocks FFmpeg, whose output then never ends); keeps the first and last _LOG_BYTES."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.head = b""
        self.tail = b""
        self._pipe = pipe
        self._thread = threading.Thread(target=self._drain, name="ffmpeg-log", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while block := self._pipe.read(_LOG_BYTES):
            if len(self.head) < _LOG_BYTES:
                self.head += block[: _LOG_BYTES - len(self.head)]
            self.tail = (self.tail + block)[-_LOG_BYTES:]

    def join(self) -> None:
        self._thread.join(timeout=10)  # EOF comes when FFmpeg exits, which it has

    def last_line(self) -> str:
        lines = self.tail.decode("utf-8", "replace").strip().splitlines()
        return lines[-1].strip() if lines else ""


def _run(name: str, stdin: Any, output: list[str],
         chunk: int) -> Generator[bytes, None, None]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise missing(FFMPEG)
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-format_whitelist",
           DEMUXERS, "-protocol_whitelist", "file,pipe", "-threads", "1", "-max_pixels",
           str(MAX_PIXELS), "-i", name, "-t", str(MAX_MEDIA_SECONDS), *output, "pipe:1"]
    proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    log = _Log(proc.stderr)
    late = threading.Event()

    def overrun() -> None:
        late.set()
        proc.kill()

    timer = threading.Timer(DECODE_TIMEOUT, overrun)
    timer.start()
    try:
        while block := proc.stdout.read(chunk):
            yield block
        code = proc.wait()
    finally:  # also when the consumer stops early or fails: FFmpeg never outlives it
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.join()
        proc.stdout.close()
        proc.stderr.close()
    # Only a decode that failed was refused for it: a large picture in a stream not decoded
    # (an MP3's cover art, probed) is logged too, and the audio still decodes.
    if code != 0 and (large := (_TOO_LARGE.search(log.head) or _TOO_LARGE.search(log.tail))):
        message = said("video frames of {width}x{height} pixels are too large: at most "
                       "{limit} pixels a frame ({largest}) are decoded",
                       width=int(large[1]), height=int(large[2]), limit=f"{MAX_PIXELS:,}",
                       largest="x".join(map(str, MAX_FRAME)))
        raise InvalidInput(message, errors=[{"field": "file", "message": message}])
    if code != 0 and any(b"does not contain any stream" in part
                         for part in (log.head, log.tail)):
        return  # no stream of the kind mapped (a silent video, a video-less file): nothing
    if code != 0:
        why = (said("took too long") if late.is_set()
               else log.last_line() or said("unknown error"))
        message = said("media does not decode: {why}", why=why)
        raise InvalidInput(message, errors=[{"field": "file", "message": message}])


def chromaprint_items(source: Source,
                      progress: Progress | None = None) -> tuple[list[int], float]:
    """Chromaprint's raw 32-bit sub-fingerprints of the first audio stream ([] if none) and
    the seconds of sound decoded."""
    chromaprint = _chromaprint()
    printer = chromaprint.Fingerprinter()
    printer.start(SAMPLE_RATE, 1)
    samples = 0
    with closing(ffmpeg_stream(source, ["-map", "0:a:0?", "-vn", "-ac", "1", "-ar",
                                        str(SAMPLE_RATE), "-f", "s16le"])) as blocks:
        for block in blocks:
            printer.feed(block)
            samples += len(block) // 2
            if progress is not None:
                progress(samples / SAMPLE_RATE)
    seconds = samples / SAMPLE_RATE
    if samples < SAMPLE_RATE:  # under a second: nothing to fingerprint
        return [], seconds
    raw = printer.finish()
    items, _ = chromaprint.decode_fingerprint(raw)
    return [int(v) & 0xFFFFFFFF for v in items], seconds


def audio_fingerprints(source: Source, progress: Progress | None = None,
                       max_items: int = MAX_AUDIO_ITEMS) -> Fingerprints:
    """{"chromaprint": ...} for media with sound, {} for media without."""
    require(MATCHING, "numpy")
    import numpy as np

    items, seconds = chromaprint_items(source, progress)
    if not items:
        return {}
    high = (np.asarray(items, dtype=np.uint32) >> 16).astype("<u2")
    return {"chromaprint": {
        "algorithm": "chromaprint",
        "version": _library_version(),
        "scheme": CHROMAPRINT_SCHEME,
        "duration": min(MAX_MEDIA_SECONDS, int(seconds)),
        "items": base64.b64encode(high[:max_items].tobytes()).decode("ascii"),
    }}


def items_of(fingerprint: dict[str, object] | Any) -> Any:
    """The uint16 numpy array inside a (validated) chromaprint fingerprint."""
    import numpy as np

    return np.frombuffer(base64.b64decode(str(fingerprint["items"])), dtype="<u2")


def _chromaprint() -> Any:
    """pyacoustid's binding, which loads libchromaprint (Debian: libchromaprint1) on import."""
    return load("chromaprint", CHROMAPRINT)


def _library_version() -> str:
    return str(_chromaprint()._libchromaprint.chromaprint_get_version().decode("ascii"))
