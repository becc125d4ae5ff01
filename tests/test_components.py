"""Parts `make run` installs after the server is up (D45): until they are there, a feature that
needs one answers 503 with Retry-After saying so, changes nothing, and never gives a degraded
answer (a PDF with missing glyphs, a work registered without its fingerprints)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from copyledger.ledger import components
from copyledger.ledger.components import INSTALLING_ENV, installing, load, missing
from copyledger.ledger.errors import Unavailable
from copyledger.matching import audio, compute
from copyledger.service import certificate
from copyledger.service._pdf import Pdf
from copyledger.service.node import Node
from tests.helpers import bearer, tree_size, work_body


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`make run`'s background install, still running."""
    path = tmp_path / ".installing"
    path.touch()
    monkeypatch.setenv(INSTALLING_ENV, str(path))
    return path


def _png() -> bytes:
    buf = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def test_installing_only_while_the_marker_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(INSTALLING_ENV, raising=False)
    assert not installing()
    monkeypatch.setenv(INSTALLING_ENV, str(tmp_path / "gone"))
    assert not installing()
    (tmp_path / "gone").touch()
    assert installing()


def test_missing_says_whether_to_wait_or_to_install(marker: Path) -> None:
    soon = missing("FFmpeg")
    assert "being installed" in soon.detail and soon.extra["retry_after"] == 30
    marker.unlink()
    later = missing("FFmpeg")
    assert "not installed" in later.detail and "make" in later.detail
    assert later.extra["retry_after"] == components.RETRY_ABSENT


def test_load_imports_or_names_the_missing_part(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load("json", "JSON").dumps([1]) == "[1]"
    monkeypatch.setitem(sys.modules, "pdqhash", None)  # import raises ImportError
    with pytest.raises(Unavailable, match="pdqhash"):
        load("pdqhash", components.PDQHASH)


def test_image_fingerprints_without_pdqhash_are_unavailable(
    marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pdqhash", None)
    with pytest.raises(Unavailable, match="being installed"):
        compute.image_fingerprints(_png())


def test_audio_without_ffmpeg_or_chromaprint_is_unavailable(
    marker: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(audio.shutil, "which", lambda name: None)
    with pytest.raises(Unavailable, match="FFmpeg"):
        list(audio.ffmpeg_stream(tmp_path / "a.wav", ["-f", "s16le"]))
    monkeypatch.setitem(sys.modules, "chromaprint", None)
    with pytest.raises(Unavailable, match="Chromaprint"):
        audio.chromaprint_items(tmp_path / "a.wav")


def test_certificate_waits_for_its_fonts_while_they_are_installed(
    marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(certificate, "FONT_DIR", Path("/nonexistent"))
    with pytest.raises(Unavailable, match="fonts"):
        Pdf()
    marker.unlink()  # the install is over: the core-font fallback, which says what it lacks
    assert not Pdf().unicode


def test_an_upload_waits_for_pdqhash_and_nothing_is_written(
    api: tuple[TestClient, Node], marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, reg = api
    monkeypatch.setitem(sys.modules, "pdqhash", None)
    before = tree_size(client)
    r = client.post("/v1/works", headers=bearer(reg, "ada"),
                    files={"file": ("x.png", _png(), "image/png")},
                    data={"title": "Harbour", "creators": ["A"], "work_type": "image"})
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "30"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "being installed" in r.json()["detail"]
    assert tree_size(client) == before
    monkeypatch.delitem(sys.modules, "pdqhash")  # installed now: the same upload goes in
    r = client.post("/v1/works", headers=bearer(reg, "ada"),
                    files={"file": ("x.png", _png(), "image/png")},
                    data={"title": "Harbour", "creators": ["A"], "work_type": "image"})
    assert r.status_code == 201, r.text


def test_a_pdf_certificate_waits_for_its_fonts(
    api: tuple[TestClient, Node], marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, reg = api
    r = client.post("/v1/works", headers=bearer(reg, "ada"),
                    json=work_body("harbour"))
    assert r.status_code == 201, r.text
    seq = r.json()["seq"]
    monkeypatch.setattr(certificate, "CJK_FONT", Path("/nonexistent/wqy-microhei.ttc"))
    r = client.get(f"/v1/entries/{seq}/certificate?format=pdf")
    assert r.status_code == 503 and r.headers["Retry-After"] == "30"
    assert "fonts" in r.json()["detail"]
    zh = client.get(f"/v1/entries/{seq}/certificate?format=pdf",
                    headers={"Accept-Language": "zh-CN"})
    assert zh.status_code == 503 and zh.headers["Retry-After"] == "30"
    assert zh.json()["detail"].startswith("证书所用的字体（Debian 软件包：fonts-dejavu-core、"
                                          "fonts-wqy-microhei）仍在安装中"), zh.json()
    assert client.get(f"/v1/entries/{seq}/certificate").status_code == 200  # HTML needs none
