"""Parts `make run` installs after the server is up (D45): until they are there, a feature that
needs one answers 503 with Retry-After saying so, changes nothing, and never gives a degraded
answer (a PDF with missing glyphs, a work registered without its fingerprints)."""

from __future__ import annotations

import io
import sys
import time
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


def test_until_the_matching_libraries_arrive_only_what_needs_them_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make run` installs NumPy, SciPy, OpenCV and FAISS after the server is up (D58): until
    the marker stops saying so, a text upload and a claim check by fingerprint answer 503 and
    write nothing, the index waits for them, and everything else works."""
    from copyledger.api.app import create_app
    from copyledger.matching import live
    from tests.helpers import open_registry

    text = b"the quick brown fox jumps over the lazy dog again and again " * 5
    fps = compute.fingerprints_for(text, "text/plain")
    marker = tmp_path / ".installing"
    marker.write_text(f"{components.LIBRARIES_PENDING}\n")
    monkeypatch.setenv(INSTALLING_ENV, str(marker))
    monkeypatch.setattr(live, "LIBRARY_POLL_S", 0.01)
    reg = open_registry(tmp_path / "registry")
    upload = {"files": {"file": ("fox.txt", text, "text/plain")},
              "data": {"title": "Fox", "creators": ["A"], "work_type": "text"}}
    with TestClient(create_app(reg)) as client:
        ada, tube = bearer(reg, "ada"), bearer(reg, "tube", "platform")
        assert client.get("/healthz").status_code == 200
        before = tree_size(client)
        r = client.post("/v1/works", headers=ada, **upload)  # type: ignore[arg-type]
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "30"
        assert "matching libraries" in r.json()["detail"]
        assert "being installed" in r.json()["detail"]
        assert tree_size(client) == before
        r = client.post("/v1/works", headers=ada, json=work_body("by hash"))
        assert r.status_code == 201, r.text  # no fingerprint needed: registered at once
        seq = r.json()["seq"]
        check = {"claimant": "ada", "work_seq": seq, "content": fps}
        r = client.post("/v1/claims/check", headers=tube, json=check)
        assert r.status_code == 503 and "matching libraries" in r.json()["detail"], r.text
        assert not reg.index.ready

        marker.write_text("")  # the background step has installed the wheels
        for _ in range(6000):
            if reg.index.ready:
                break
            time.sleep(0.01)
        assert reg.index.ready
        r = client.post("/v1/works", headers=ada, **upload)  # type: ignore[arg-type]
        assert r.status_code == 201, r.text
        assert r.json()["entry"]["content"]["fingerprints"] == fps
        r = client.post("/v1/claims/check", headers=tube, json=check)
        assert r.status_code == 200 and r.json()["index_ready"], r.text


def test_a_missing_matching_library_is_named_when_the_install_is_over(
    marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker.write_text("")  # the wheels step is over, but this one did not arrive
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(Unavailable, match=r"matching libraries.*being installed"):
        components.require(components.MATCHING, "numpy", "faiss")
    marker.unlink()
    with pytest.raises(Unavailable, match="not installed"):
        components.require(components.MATCHING, "numpy", "faiss")
    components.require(components.MATCHING, "numpy")
