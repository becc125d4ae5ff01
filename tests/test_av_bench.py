"""The audio/video bench's shortcut: unrelated tracks are fingerprinted from their PCM in
memory, not through a FLAC file, and must get the very fingerprint the file gets (D66)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bench.av_bench import song_wav
from copyledger.matching import compute
from tests.test_av import write_song


@pytest.mark.parametrize("seed", [3, 100_017])
def test_unrelated_track_fingerprint_from_memory_is_the_flac_files(seed: int,
                                                                   tmp_path: Path) -> None:
    from_file = compute.fingerprints_for(write_song(seed, tmp_path / "s.flac", 20.0),
                                         "audio/flac")
    from_memory = compute.fingerprints_for(io.BytesIO(song_wav(seed, 20.0)), "audio/wav")
    assert from_file["chromaprint"]["items"]
    assert from_memory == from_file
