"""Streamed multipart uploads (api/uploads.py) and the bounded decoders they feed
(matching/compute.py): same answers as before, refusals for malformed forms."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from copyledger.matching import compute, scoring

FIELDS = {"title": "A work", "creators": ["Ada", "Grace"], "work_type": "image"}


def _raw(parts: list[tuple[str, str | None, bytes]], boundary: str = "xyz") -> bytes:
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_upload_is_hashed_with_its_fields(client: TestClient, creator: dict[str, str]) -> None:
    data = bytes(range(256)) * 20_000  # 5 MB: several spool writes
    r = client.post("/v1/works", headers=creator, data=FIELDS,
                    files={"file": ("a.bin", data, "application/octet-stream")})
    assert r.status_code == 201, r.text
    entry = r.json()["entry"]
    assert entry["content"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert entry["content"]["size"] == len(data)
    assert entry["creators"] == ["Ada", "Grace"] and entry["title"] == "A work"


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (_raw([("file", "a", b"1"), ("file", "b", b"2")]), "multipart/form-data; boundary=xyz"),
        (_raw([("other", "a", b"1")]), "multipart/form-data; boundary=xyz"),
        (_raw([("title", None, b"x" * ((1 << 20) + 1)), ("file", "a", b"1")]),
         "multipart/form-data; boundary=xyz"),
        (_raw([("file", "a", b"1")]), "multipart/form-data"),
        (b"--xyz\r\nContent-Disposition: form-data\r\n\r\n1\r\n--xyz--\r\n",
         "multipart/form-data; boundary=xyz"),
    ],
    ids=["two-files", "file-not-named-file", "fields-too-large", "no-boundary", "no-name"],
)
def test_malformed_forms_are_400(client: TestClient, creator: dict[str, str], body: bytes,
                                 ctype: str) -> None:
    r = client.post("/v1/works", headers={**creator, "Content-Type": ctype}, content=body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"


def test_no_file_part_is_422(client: TestClient, creator: dict[str, str]) -> None:
    r = client.post("/v1/works", headers={**creator, "Content-Type": "multipart/form-data; "
                                          "boundary=xyz"}, content=_raw([("title", None, b"t")]))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "file"


def test_unauthenticated_upload_is_refused_before_parsing(client: TestClient) -> None:
    r = client.post("/v1/works", headers={"Content-Type": "multipart/form-data; boundary=xyz"},
                    content=b"not even multipart")
    assert r.status_code == 401


def test_text_file_fingerprint_streamed_in_pieces_equals_in_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    words = ["harbour", "Ünïcode", "著作权", "登记", "ｶﾞ", "fine,", "the", "ＡＢＣ"]
    rng = np.random.default_rng(7)
    text = " ".join(str(words[i]) for i in rng.integers(0, len(words), 5000))
    text += "\n" + "x" * 300 + " tail words here"  # a run longer than a piece
    data = text.encode()
    monkeypatch.setattr(compute, "_TEXT_PIECE", 64)  # many pieces, cuts inside UTF-8
    streamed = compute.fingerprints_for(io.BytesIO(data), "text/plain")
    assert streamed == compute.fingerprints_for(data, "text/plain") != {}


def test_large_sixteen_bit_png_is_thumbnailed_in_its_own_mode() -> None:
    """Pillow cannot reduce() "I;16"; an image large enough for thumbnail() to try must still
    decode, and hash as its 8-bit version does."""
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    grey = Image.fromarray(small).resize((2400, 1800), Image.Resampling.BICUBIC)
    wide = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)

    def png(image: Image.Image) -> bytes:
        buf = io.BytesIO()
        image.save(buf, "PNG")
        return buf.getvalue()

    assert Image.open(io.BytesIO(png(wide))).mode == "I;16"
    want = compute.image_fingerprints(png(grey))["pdq"]
    got = compute.image_fingerprints(png(wide))["pdq"]
    assert scoring.compare("pdq", want, got).verdict == "match"
