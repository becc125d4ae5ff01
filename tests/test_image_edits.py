"""Image matching under the edits real uploads carry (issue 11), on real photographs.

Photos are scikit-image's bundled samples (bench/image_edits.py); every edit class of the issue
is applied to a few and must be found, with the right explanation, by the same verdict logic
the claim check uses; unrelated photos must not match. The ORB fingerprint schema is strict,
and entries registered before it stay valid.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.image_edits import EDITS, EXPECT, encode, photos
from bench.image_edits_bench import verdicts
from copyledger.api.app import create_app
from copyledger.ledger import entry as entry_mod
from copyledger.ledger.errors import InvalidInput
from copyledger.ledger.fingerprint import ORB_RECORD_BYTES, validate_fingerprints
from copyledger.matching import local
from copyledger.matching.compute import content_box, image_fingerprints, query_fingerprints
from copyledger.matching.index import FingerprintIndex, explain_view
from copyledger.matching.scoring import ORB_POSSIBLE, compare
from copyledger.service.apikeys import create_key
from copyledger.service.node import Node
from tests.helpers import open_registry, wait_for

PHOTOS = ("skimage/astronaut", "skimage/coffee", "skimage/chelsea")


@pytest.fixture(scope="module")
def registry() -> tuple[list[tuple[str, Any]], list[dict[str, Any]], FingerprintIndex]:
    pictures = [p for p in photos() if p[0] in PHOTOS or p[0] == "skimage/rocket"]
    registered = [image_fingerprints(encode(im)) for _, im in pictures]
    index = FingerprintIndex()
    index.add_many(enumerate(registered))
    return pictures, registered, index


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_each_edit_class_is_found_and_explained(registry: Any, edit: str) -> None:
    pictures, registered, index = registry
    rng = random.Random(edit)
    for i, (name, im) in enumerate(pictures):
        if name not in PHOTOS:
            continue
        other = pictures[-1][1]  # the rocket: the background of picture-in-picture
        query = query_fingerprints(encode(EDITS[edit](im, rng, other)))
        best, why = verdicts(index, registered, query)
        assert best[i] != "none", (name, edit)
        if edit in EXPECT:
            assert EXPECT[edit] in why[i], (name, edit, why[i])


def test_unrelated_photos_do_not_match(registry: Any) -> None:
    pictures, registered, index = registry
    rng = random.Random(3)
    for i, (name, im) in enumerate(pictures):
        for edit in ("mirror", "crop_50_corner", "screenshot_60", "jpeg_q30"):
            query = query_fingerprints(encode(EDITS[edit](im, rng, im)))
            best, _ = verdicts(index, registered, query)
            assert [s for s, v in best.items() if s != i and v == "match"] == [], (name, edit)


def test_explanations_say_what_was_done() -> None:
    p = local.Placement(inliers=40, mirrored=True, rotation=90.0, scale=1.0, visible=0.62,
                        origin=(0.1, 0.2), coverage=1.0)
    assert p.explain() == ("mirrored, rotated 90°, crop of 62 % of the original at x 10 %, "
                           "y 20 % (40 geometrically consistent keypoints)")
    q = local.Placement(inliers=25, mirrored=False, rotation=0.0, scale=0.5, visible=1.0,
                        origin=(0.0, 0.0), coverage=0.55)
    assert q.explain() == ("shown at 55 % inside a larger image "
                           "(25 geometrically consistent keypoints)")


def test_content_box_trims_bars_not_photos() -> None:
    _, im = photos(1)[0]
    im = im.copy()
    im.thumbnail((512, 512))
    assert content_box(im) is None  # a photo edge to edge keeps its frame
    boxed = EDITS["letterbox"](im, random.Random(1), im)
    left, top, right, bottom = content_box(boxed) or (0, 0, 0, 0)
    bar = (boxed.height - im.height) // 2
    assert abs(top - bar) <= 2 and abs(boxed.height - bottom - bar) <= 2
    assert left == 0 and right == boxed.width


# ---------------------------------------------------------------- the schema


def _orb(n: int, width: int = 512, height: int = 384, **extra: object) -> dict[str, object]:
    raw = bytes(range(ORB_RECORD_BYTES)) * n
    return {"algorithm": "orb", "version": "4.12", "scheme": "orb-v1", "width": width,
            "height": height, "keypoints": base64.b64encode(raw).decode(), **extra}


def test_orb_schema_is_strict() -> None:
    assert validate_fingerprints({"orb": _orb(128)})["orb"]["keypoints"] == _orb(128)["keypoints"]
    bad: list[tuple[dict[str, object], str]] = [
        (_orb(129), "fingerprints.orb.keypoints"),  # more than a registration may store
        ({**_orb(1), "scheme": "orb-v2"}, "fingerprints.orb.scheme"),
        ({**_orb(1), "width": 0}, "fingerprints.orb.width"),
        ({**_orb(1), "height": True}, "fingerprints.orb.height"),
        ({**_orb(1), "keypoints": "AAAA"}, "fingerprints.orb.keypoints"),  # 3 bytes
        ({**_orb(1), "keypoints": "not base64!"}, "fingerprints.orb.keypoints"),
        (_orb(1, width=1, height=1), "fingerprints.orb.keypoints"),  # a point outside
        ({**_orb(1), "mirrored": _orb(1)["keypoints"]}, "fingerprints.orb.mirrored"),
        ({**_orb(1), "extra": 1}, "fingerprints.orb.extra"),
    ]
    for value, field in bad:
        with pytest.raises(InvalidInput) as e:
            validate_fingerprints({"orb": value})
        assert e.value.extra["errors"] == [{"field": field, "message": ANY}], value
    with pytest.raises(InvalidInput):  # views are a claim check's, never an entry's
        validate_fingerprints({"views": [{"transform": "mirrored", "hash": "0" * 64}]})


def test_claim_content_may_carry_views_and_more_keypoints() -> None:
    region = {"transform": "content region", "hash": "0" * 64, "region": [200, 100, 800, 700]}
    content = {"orb": {**_orb(2048), "mirrored": _orb(2048)["keypoints"]},
               "views": [{"transform": "rotated 90°", "hash": "A" * 64}, region]}
    got = validate_fingerprints(content, field="content", allow_bare=True)
    assert got["views"] == [{"transform": "rotated 90°", "hash": "a" * 64}, region]
    assert explain_view(region) == "content region: shown at 60 % inside a larger image"
    assert explain_view({**region, "region": [0, 150, 1000, 850]}) == (
        "content region: bars, borders or captions trimmed")
    for views in ([], [{"transform": "sheared", "hash": "0" * 64}],
                  [{"transform": "mirrored", "hash": "0" * 63}],
                  [{"transform": "mirrored", "hash": "0" * 64, "x": 1}], "mirrored",
                  [{**region, "region": [500, 0, 500, 1000]}],
                  [{**region, "region": [0, 0, 1001, 1000]}],
                  [{**region, "region": [0, 0, 1000]}], [{**region, "region": [0, 0, 1, True]}]):
        with pytest.raises(InvalidInput):
            validate_fingerprints({"views": views}, field="content", allow_bare=True)
    with pytest.raises(InvalidInput):
        validate_fingerprints({"orb": _orb(2049)}, field="content", allow_bare=True)


records = st.lists(st.tuples(st.integers(0, 8 * 512), st.integers(0, 8 * 384),
                             st.binary(min_size=32, max_size=32)), min_size=1, max_size=128)


@settings(max_examples=60, deadline=None)
@given(records)
def test_keypoint_encoding_round_trips(points: list[tuple[int, int, bytes]]) -> None:
    raw = b"".join(x.to_bytes(2, "little") + y.to_bytes(2, "little") + d for x, y, d in points)
    fp = _orb(1)
    fp["keypoints"] = local.encode_keypoints(raw)
    valid = validate_fingerprints({"orb": fp})["orb"]
    xy, desc = local.decode_keypoints(str(valid["keypoints"]))
    assert [(round(a * 8), round(b * 8)) for a, b in xy.tolist()] == [(x, y) for x, y, _ in points]
    assert [bytes(row) for row in desc] == [d for _, _, d in points]


def test_entries_without_orb_stay_valid_and_searchable() -> None:
    old = {"pdq": {"algorithm": "pdq", "version": "0.2.8", "hash": "f" * 64, "quality": 90,
                   "low_quality": False},
           "phash": {"algorithm": "phash", "version": "4.3.1", "hash": "0" * 16}}
    e, _ = entry_mod.encode(entry_mod.build_work(
        registrant="ada", received_at=entry_mod.utc_now(), sha256="a" * 64, title="old",
        creators=["A"], work_type="image", fingerprints=old))
    assert e["content"]["fingerprints"] == old
    index = FingerprintIndex()
    index.add(0, old)
    views = [{"transform": "mirrored", "hash": "f" * 64}]
    found = index.search({"pdq": {"hash": "0" * 64}, "views": views})
    assert [(c.seq, c.verdict, c.explanation) for c in found] == [(0, "match", "mirrored")]


# ---------------------------------------------------------------- over HTTP


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, Node]]:
    reg = open_registry(tmp_path)
    with TestClient(create_app(reg)) as c:
        wait_for(lambda: reg.index.ready, "the index was not built")
        yield c, reg


def _key(reg: Node, role: str, account: str) -> dict[str, str]:
    k, _ = create_key(reg.store, role, account)
    return {"Authorization": f"Bearer {k}"}


def test_upload_without_extension_is_fingerprinted_and_crop_explained(
        served: tuple[TestClient, Node]) -> None:
    client, reg = served
    ada, plat = _key(reg, "creator", "ada"), _key(reg, "platform", "tube")
    _, im = photos(1)[0]  # the astronaut
    r = client.post("/v1/works", headers=ada,
                    files={"file": ("blob-8721", encode(im), "application/octet-stream")},
                    data={"title": "Astronaut", "creators": ["A"], "work_type": "image"})
    assert r.status_code == 201, r.text
    work = r.json()
    content = work["entry"]["content"]
    assert content["media_type"] == "image/jpeg"
    assert set(content["fingerprints"]) == {"pdq", "phash", "orb"}

    crop = EDITS["crop_50_corner"](im, random.Random(2), im)
    r = client.post("/v1/claims/check", headers=plat,
                    files={"file": ("blob-8722", encode(crop), "application/octet-stream")},
                    data={"claimant": "ada", "work_seq": str(work["seq"])})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["verdict"] in ("match", "possible") and "orb" in a["fingerprinted"]
    orb = [m for m in a["matches"] if m["algorithm"] == "orb"]
    assert orb and orb[0]["seq"] == work["seq"] and orb[0]["inliers"] >= orb[0]["threshold"]
    assert "crop of" in orb[0]["explanation"] and orb[0]["transform"]["visible"] < 0.9

    # Bytes that are no image or text: hashed, not fingerprinted, and the answer says so.
    r = client.post("/v1/claims/check", headers=plat,
                    files={"file": ("blob", b"\x00\x01" * 500, "application/octet-stream")},
                    data={"claimant": "ada", "work_seq": str(work["seq"])})
    a = r.json()
    assert a["fingerprinted"] == [] and a["verdict"] == "none"
    assert a["caveats"][0].startswith("No perceptual fingerprint")


@pytest.mark.parametrize("side", [1, 2, 16, 31])
def test_tiny_images_get_no_keypoints_and_no_error(side: int) -> None:
    """OpenCV's pyramid refuses images this small; they get PDQ and pHash but no `orb`, as a
    registration and as a claim check's disputed content (schemathesis found the 500)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (120, 30, 200)).save(buf, "PNG")
    for fps in (image_fingerprints(buf.getvalue()), query_fingerprints(buf.getvalue())):
        assert "orb" not in fps and "pdq" in fps, fps
    big = io.BytesIO()
    Image.effect_noise((64, 64), 80).convert("RGB").save(big, "PNG")
    assert "orb" in image_fingerprints(big.getvalue())  # the bound is not too high


# ---------------------------------------------------------------- soft photos (D52)


@pytest.fixture(scope="module")
def soft() -> tuple[list[tuple[str, Any]], list[dict[str, Any]], FingerprintIndex]:
    """A retinal scan with almost no texture (102 px square), registered beside two busy
    photos. Shown at 60-80 % of a screenshot (blown up 7-10 times) it is still missed."""
    pictures = [p for p in photos()
                if p[0] in ("skimage/microaneurysms", "skimage/astronaut", "skimage/rocket")]
    registered = [image_fingerprints(encode(im)) for _, im in pictures]
    index = FingerprintIndex()
    index.add_many(enumerate(registered))
    return pictures, registered, index


def test_a_soft_photo_is_registered_with_all_its_keypoints(soft: Any) -> None:
    """FAST at 10 left the retinal scan 10 keypoints, too few for any crop to keep 10 inliers."""
    pictures, registered, _ = soft
    for (name, _), fps in zip(pictures, registered, strict=True):
        xy, _ = local.decode_keypoints(str(fps["orb"]["keypoints"]))
        assert len(xy) == 128, name


@pytest.mark.parametrize("edit", ["border", "pillarbox", "crop_70", "crop_50_corner",
                                  "caption_bar", "meme_text", "watermark_logo",
                                  "screenshot_40"])
def test_a_soft_photo_is_found_under_the_edits_it_failed(soft: Any, edit: str) -> None:
    pictures, registered, index = soft
    i = [name for name, _ in pictures].index("skimage/microaneurysms")
    query = query_fingerprints(encode(EDITS[edit](pictures[i][1], random.Random(edit),
                                                  pictures[0][1])))
    best, why = verdicts(index, registered, query)
    assert best[i] != "none", edit
    if edit in EXPECT:
        assert EXPECT[edit] in why[i], why[i]
    assert [s for s, v in best.items() if s != i and v != "none"] == [], edit


def test_a_claim_check_may_send_2048_keypoints_as_json(
        served: tuple[TestClient, Node]) -> None:
    """The CLI fingerprints the disputed file itself and sends JSON: 2 x 2,048 keypoints
    (~200 KB) are past the 64 KiB JSON limit, so the claim check has its own (D52)."""
    client, reg = served
    ada, plat = _key(reg, "creator", "ada"), _key(reg, "platform", "tube")
    _, im = photos(1)[0]
    r = client.post("/v1/works", headers=ada,
                    files={"file": ("a.jpg", encode(im), "image/jpeg")},
                    data={"title": "Astronaut", "creators": ["A"], "work_type": "image"})
    assert r.status_code == 201, r.text
    seq = r.json()["seq"]
    shot = query_fingerprints(encode(EDITS["screenshot_40"](im, random.Random(4), im)))
    assert len(base64.b64decode(shot["orb"]["keypoints"])) > 512 * ORB_RECORD_BYTES
    r = client.post("/v1/claims/check", headers=plat,
                    json={"claimant": "ada", "work_seq": seq, "content": shot})
    assert r.status_code == 200, r.text
    orb = [m for m in r.json()["matches"] if m["algorithm"] == "orb"]
    assert orb and orb[0]["seq"] == seq and "inside a larger image" in orb[0]["explanation"]
    padded = {"claimant": "ada", "work_seq": seq,
              "content": {**shot, "pad": "x" * reg.settings.max_check_body_bytes}}
    assert client.post("/v1/claims/check", headers=plat, json=padded).status_code == 413


# ---------------------------------------------------------------- guided second pass (D62)


@pytest.fixture(scope="module")
def inset() -> tuple[dict[str, Any], dict[str, Any]]:
    """The moon (soft, grey) as a 40 % inset over the Hubble deep field (a busy star field):
    the upload's own corners give its keypoints close seconds, so Lowe's test keeps 9 true
    ones, one short of 'possible' (a miss of the benchmark's round, D62)."""
    pictures = dict(p for p in photos() if p[0] in ("skimage/moon", "skimage/hubble_deep_field"))
    moon, stars = pictures["skimage/moon"], pictures["skimage/hubble_deep_field"]
    upload = EDITS["picture_in_picture"](moon, random.Random(0), stars)
    return image_fingerprints(encode(moon))["orb"], query_fingerprints(encode(upload))["orb"]


def test_a_soft_inset_is_found_by_the_guided_pass(inset: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    registered, query = inset
    found = local.verify(registered, query)
    assert found is not None and found.inliers >= ORB_POSSIBLE and found.guided, found
    assert "inside a larger image" in found.explain()
    monkeypatch.setattr(local, "_GUIDED_BELOW", 0)  # the first pass alone: under 'possible'
    first = local.verify(registered, query)
    assert first is not None and first.inliers < ORB_POSSIBLE <= found.inliers


def test_the_guided_pass_finds_nothing_in_unrelated_photos(registry: Any) -> None:
    """A chance fit of an upload on an unrelated photo (4-5 keypoints) is rerun guided, and
    stays under 'possible'."""
    pictures, registered, _ = registry
    rng = random.Random(5)
    for i, (name, im) in enumerate(pictures):
        for edit in ("picture_in_picture", "caption_bar", "crop_50_corner", "screenshot_60"):
            query = query_fingerprints(encode(EDITS[edit](im, rng, im)))["orb"]
            for seq, fps in enumerate(registered):
                if seq != i:
                    found = local.verify(fps["orb"], query)
                    assert found is None or found.inliers < ORB_POSSIBLE, (name, edit, seq)


@pytest.mark.parametrize("guided", [False, True])
def test_a_guided_fit_is_never_a_match(guided: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guided matching drops the ratio test, so its count is weaker evidence: however many
    inliers it finds, the verdict is at most 'possible' (the 'match' rule is the first pass's)."""
    found = local.Placement(inliers=40, mirrored=False, rotation=0.0, scale=0.5, visible=1.0,
                            origin=(0.0, 0.0), coverage=0.4, guided=guided)
    monkeypatch.setattr(local, "verify", lambda registered, query: found)
    score = compare("orb", {"version": "orb-v1"}, {"version": "orb-v1"})
    assert score.inliers == 40
    assert score.verdict == ("possible" if guided else "match")
