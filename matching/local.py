"""Local features: ORB keypoints of an image, and geometric verification of two images.

Global hashes (PDQ, pHash) see a whole picture; a crop, a screenshot or a picture-in-picture
changes the whole and defeats them. Keypoints survive: the registered image's strongest ORB
keypoints are stored in its entry (compact, spread over the picture), the disputed image's
are sent with the claim check, and a RANSAC fit of a similarity transform (scale, rotation,
shift) says whether enough of them agree on one placement of the original inside the upload.
That placement is the explanation: mirrored, rotated, which part of the original, how large.

OpenCV and numpy are imported inside functions: importing this module costs nothing.
"""

from __future__ import annotations

import base64
import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from copyledger.ledger.fingerprint import ORB_RECORD_BYTES, ORB_REGISTERED_MAX

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "ORB_QUERY_MAX",
    "ORB_QUERY_PX",
    "Placement",
    "decode_keypoints",
    "encode_keypoints",
    "orb_keypoints",
    "verify",
]

ORB_QUERY_MAX = 2048
"""Keypoints the disputed image sends: more than a registration stores, because a picture
shown small inside a screenshot or a picture-in-picture has only a share of the upload's
keypoints. 512 left a 40 % inset or a 50 % corner crop of a soft photo 4-9 of them (D52)."""
ORB_QUERY_PX = 1024
"""The disputed image's keypoints are found at this long side, twice the registered one's:
a picture at 40 % of a screenshot's width is then still about as large as when registered."""
_DETECT = 1500  # keypoints detected before the spread-out selection
_FAST = 5
"""FAST's corner threshold (intensity steps out of 255). OpenCV's default 20, and the 10 used
before D52, left a dark storm sky 13 keypoints and a retinal scan 10 of the 128 a registration
may store; at 5 they get all 128. A textured photo's strongest corners are the same either
way (the ORB cap keeps the best Harris scores), so its keypoints hardly change."""
_GRID = 4  # the registered keypoints are picked evenly over a 4x4 grid
_RATIO = 0.8  # Lowe's ratio test on Hamming distances
_RANSAC_PX = 6.0  # reprojection error (thumbnail pixels) of an inlier
_SUBPIXEL = 8  # coordinates are stored in 1/8 pixel
_GUIDED_BELOW = 18
"""A first fit with fewer inliers than this (ORB_MATCH in matching.scoring) gets the guided
second pass: a clear match needs no more work, so the extra cost falls only on inconclusive
checks."""
_GUIDED_PX = 8.0
"""Query keypoints within this many pixels of where the first fit puts a registered keypoint
are its only candidates in the guided pass."""
_GUIDED_SCALES = (0.2, 8.0)
"""Scales (upload px per registered px) at which a first fit is worth a guided pass, and the
second fit is kept (8 is the bound of any fit; a 102-px scan shown in a screenshot is at 4-8).
A chance fit squeezed to a sliver would otherwise project every registered keypoint onto a few
pixels."""
_GUIDED_DEGREES = 5.0
"""A first fit is worth a guided pass only when its rotation is within this many degrees of a
multiple of 90: the edits seen (crops, insets, captions, screenshots, quarter turns) are square
to the original, while a chance fit's rotation is anywhere, so this alone turns away ~17 in 18
chance fits before they are given the looser matching."""
_GUIDED_HAMMING = 64
"""Largest descriptor distance (bits of 256) a guided candidate may have. Unrelated ORB
descriptors sit near 128 bits apart; a re-encoded or rescaled keypoint is usually under 50."""


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the registered picture was found in the disputed one.

    `inliers` keypoints agree on a similarity transform; `mirrored` when they agree only
    with the upload flipped left-right; `rotation` in degrees clockwise (after any mirroring),
    rounded to the nearest 90 when within 10 degrees of it; `scale` upload pixels per original
    pixel; `visible` the share of the original's area inside the upload; `origin` the top-left
    of that visible part as fractions of the original; `coverage` the share of the upload's
    width the original spans; `guided` (below).
    """

    inliers: int
    mirrored: bool
    rotation: float
    scale: float
    visible: float
    origin: tuple[float, float]
    coverage: float
    guided: bool = False
    """The inliers were counted by the guided second pass (`_guided`): evidence for
    'possible' only (matching.scoring caps the verdict), never for 'match'."""

    def explain(self) -> str:
        """One human sentence: what was done to the original to give the upload."""
        parts = []
        if self.mirrored:
            parts.append("mirrored")
        if self.rotation:
            parts.append(f"rotated {self.rotation:g}°")
        if self.visible < 0.9:
            x, y = self.origin
            parts.append(f"crop of {round(100 * self.visible)} % of the original at "
                         f"x {round(100 * x)} %, y {round(100 * y)} %")
        if self.coverage < 0.85 and self.visible >= 0.9:
            parts.append(f"shown at {round(100 * self.coverage)} % inside a larger image")
        what = ", ".join(parts) or "the whole picture"
        return f"{what} ({self.inliers} geometrically consistent keypoints)"

    def to_json(self) -> dict[str, object]:
        return {"mirrored": self.mirrored, "rotation": self.rotation,
                "scale": round(self.scale, 3), "visible": round(self.visible, 3),
                "origin": [round(self.origin[0], 3), round(self.origin[1], 3)],
                "coverage": round(self.coverage, 3)}


ORB_MIN_SIDE = 32
"""Images narrower or shorter than this get no keypoints: a keypoint's 15-pixel patch plus the
15-pixel edge margin leave no room, and OpenCV's pyramid refuses them (a 1x1 PNG was a 500)."""


def orb_keypoints(image: Image, limit: int = ORB_REGISTERED_MAX, *,
                  mirror: bool = False) -> bytes:
    """The image's ORB keypoints as stored: `limit` of the strongest, spread over a grid so a
    crop of any part keeps some; each record is x, y (uint16, 1/8 px) and 32 descriptor bytes."""
    import cv2
    import numpy as np

    if min(image.size) < ORB_MIN_SIDE:
        return b""
    grey = np.asarray(image.convert("L"), dtype=np.uint8)
    if mirror:
        grey = np.ascontiguousarray(grey[:, ::-1])
    detect = _DETECT * max(1, limit // ORB_REGISTERED_MAX // 2)
    orb = cv2.ORB.create(nfeatures=detect, fastThreshold=_FAST, edgeThreshold=15, patchSize=15)
    points, descriptors = orb.detectAndCompute(grey, None)
    if descriptors is None or not points:
        return b""
    height, width = grey.shape
    order = sorted(range(len(points)), key=lambda i: -points[i].response)
    chosen = _spread(order, points, width, height, limit)
    out = bytearray()
    for i in chosen:
        x, y = points[i].pt
        out += round(x * _SUBPIXEL).to_bytes(2, "little")
        out += round(y * _SUBPIXEL).to_bytes(2, "little")
        out += descriptors[i].tobytes()
    return bytes(out)


def _spread(order: list[int], points: Any, width: int, height: int, limit: int) -> list[int]:
    """Up to `limit` keypoints, strongest first, at most limit / cells from any grid cell
    until every cell has had its turn; then the strongest of the rest."""
    per_cell = max(1, limit // (_GRID * _GRID))
    counts: dict[tuple[int, int], int] = {}
    chosen: list[int] = []
    rest: list[int] = []
    for i in order:
        x, y = points[i].pt
        cell = (min(_GRID - 1, int(x * _GRID / width)), min(_GRID - 1, int(y * _GRID / height)))
        if counts.get(cell, 0) < per_cell:
            counts[cell] = counts.get(cell, 0) + 1
            chosen.append(i)
        else:
            rest.append(i)
    return (chosen + rest)[:limit]


def encode_keypoints(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def decode_keypoints(encoded: str) -> tuple[Any, Any]:
    """(points as float32 N x 2 in pixels, descriptors as uint8 N x 32) of stored keypoints."""
    import numpy as np

    raw = base64.b64decode(encoded)
    records = np.frombuffer(raw, np.uint8).reshape(-1, ORB_RECORD_BYTES)
    xy = records[:, :4].copy().view("<u2").astype(np.float32) / _SUBPIXEL
    return xy, np.ascontiguousarray(records[:, 4:])


def verify(registered: dict[str, object], query: dict[str, object]) -> Placement | None:
    """The best placement of the registered picture in the query (tried as sent and mirrored),
    or None when fewer than 4 keypoints agree on one."""
    reg = decode_keypoints(str(registered["keypoints"]))
    size = (int(str(registered["width"])), int(str(registered["height"])))
    qsize = (int(str(query["width"])), int(str(query["height"])))
    best: Placement | None = None
    for mirrored, field in ((False, "keypoints"), (True, "mirrored")):
        if field not in query:
            continue
        found = _fit(reg, _query_keys(str(query[field])), size, qsize, mirrored)
        if found is not None and (best is None or found.inliers > best.inliers):
            best = found
    return best


@dataclass(frozen=True, slots=True)
class _QueryKeys:
    """A disputed image's keypoints, decoded once per claim check (it is verified against up
    to GEOMETRIC_CANDIDATES works): points, descriptors, and a faiss binary index of the
    descriptors for the nearest-neighbour search."""

    xy: Any
    desc: Any
    index: Any


@functools.lru_cache(maxsize=8)
def _query_keys(encoded: str) -> _QueryKeys:
    """The keypoints of `encoded`, cached by the string: a claim check passes the same string
    object for every candidate, whose hash Python keeps, so a hit costs no decoding."""
    import faiss

    xy, desc = decode_keypoints(encoded)
    xy.flags.writeable = False
    desc.flags.writeable = False
    index = faiss.IndexBinaryFlat(8 * desc.shape[1])
    if len(desc):
        index.add(desc)
    return _QueryKeys(xy, desc, index)


def _ratio_matches(rdesc: Any, qry: _QueryKeys) -> tuple[Any, Any]:
    """(registered index, query index) of the pairs that pass Lowe's ratio test, in registered
    order: each registered descriptor's nearest query descriptor, kept when it is clearly
    nearer than the second nearest. faiss' exact 2-NN Hamming search, at a sixth of OpenCV's
    `BFMatcher.knnMatch` CPU for 128 x 2,048 descriptors, and the same pairs: the two
    distances are exact, and a tie for the nearest (where the two could pick different
    indexes) fails the test in both (D76)."""
    import numpy as np

    from copyledger.matching.index import bind_faiss_threads

    bind_faiss_threads()
    distances, ids = qry.index.search(np.ascontiguousarray(rdesc), 2)
    keep = distances[:, 0] < _RATIO * distances[:, 1]
    return np.flatnonzero(keep), ids[keep, 0]


def _fit(reg: tuple[Any, Any], qry: _QueryKeys, size: tuple[int, int],
         qsize: tuple[int, int], mirrored: bool) -> Placement | None:
    rxy, rdesc = reg
    if len(rdesc) < 2 or len(qry.desc) < 2:
        return None
    good = _ratio_matches(rdesc, qry)
    if len(good[0]) < 4:
        return None
    matrix, inliers = _ransac(rxy, qry.xy, good)
    if matrix is None or inliers < 4:
        return None
    scale = _scale(matrix)
    if not 0.05 <= scale <= 8.0:
        return None
    guided = False
    if inliers < _GUIDED_BELOW and _GUIDED_SCALES[0] <= scale <= _GUIDED_SCALES[1] \
            and _off_square(matrix) <= _GUIDED_DEGREES:
        matrix, more = _guided(matrix, inliers, reg, qry)
        guided, inliers, scale = more > inliers, more, _scale(matrix)
    angle = _angle(matrix)
    nearest = round(angle / 90) * 90 % 360
    rotation = float(nearest) if _off_square(matrix) <= 10 else round(angle)
    return _placement(matrix, size, qsize, inliers, mirrored, rotation, scale, guided)


def _angle(matrix: Any) -> float:
    """The fit's rotation in degrees, clockwise on screen (image y points down)."""
    return math.degrees(math.atan2(float(matrix[1, 0]), float(matrix[0, 0]))) % 360


def _off_square(matrix: Any) -> float:
    """Degrees between the fit's rotation and the nearest multiple of 90."""
    angle = _angle(matrix)
    return abs((angle - round(angle / 90) * 90 + 180) % 360 - 180)


def _ransac(rxy: Any, qxy: Any, pairs: tuple[Any, Any]) -> tuple[Any, int]:
    """The RANSAC similarity fit of matched keypoint pairs (registered indexes, query indexes)
    and its distinct inliers (None, 0 when there is none)."""
    import cv2
    import numpy as np

    src = np.ascontiguousarray(rxy[pairs[0]], dtype=np.float32)
    dst = np.ascontiguousarray(qxy[pairs[1]], dtype=np.float32)
    matrix, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=_RANSAC_PX, maxIters=2000,
        confidence=0.995)
    if matrix is None:
        return None, 0
    return matrix, _distinct(dst[mask.ravel().astype(bool)])


def _scale(matrix: Any) -> float:
    return math.hypot(float(matrix[0, 0]), float(matrix[1, 0]))


def _guided(matrix: Any, inliers: int, reg: tuple[Any, Any], qry: _QueryKeys
            ) -> tuple[Any, int]:
    """Guided matching, the second pass of an inconclusive fit: each registered keypoint is
    matched only among the query keypoints near where the first fit places it, without the
    ratio test. Lowe's test throws away a true match whenever the upload repeats its texture or
    other content (a busy photo around an inset, a caption's letters, the rest of the page)
    offers a close second; the placement now rules those out instead. Kept only if RANSAC on
    the guided pairs finds more distinct inliers than the first fit (D62)."""
    import cv2
    import numpy as np

    (rxy, rdesc), qxy, qdesc = reg, qry.xy, qry.desc
    projected = cv2.transform(rxy.reshape(-1, 1, 2), matrix).reshape(-1, 2)
    near = ((projected[:, None, :] - qxy[None, :, :]) ** 2).sum(-1) <= _GUIDED_PX ** 2
    if not near.any():
        return matrix, inliers
    found = cv2.BFMatcher(cv2.NORM_HAMMING).match(rdesc, qdesc, mask=near.astype(np.uint8))
    good = [m for m in found if m.distance <= _GUIDED_HAMMING]
    if len(good) <= inliers:
        return matrix, inliers
    second, count = _ransac(rxy, qxy, (np.array([m.queryIdx for m in good], np.intp),
                                       np.array([m.trainIdx for m in good], np.intp)))
    if second is None:
        return matrix, inliers
    plausible = _GUIDED_SCALES[0] <= _scale(second) <= _GUIDED_SCALES[1]
    return (second, count) if plausible and count > inliers else (matrix, inliers)


def _distinct(points: Any) -> int:
    """Inliers counted once per query location (several registered keypoints can land on one
    repeated texture point; they are one piece of evidence)."""
    return len({(int(x) // 3, int(y) // 3) for x, y in points.tolist()})


def _placement(matrix: Any, size: tuple[int, int], qsize: tuple[int, int], inliers: int,
               mirrored: bool, rotation: float, scale: float, guided: bool) -> Placement:
    """Visible share of the original and where, from where the upload's frame falls on it."""
    import cv2
    import numpy as np

    width, height = size
    qw, qh = qsize
    inverse = cv2.invertAffineTransform(matrix)
    frame = np.array([[0, 0], [qw, 0], [qw, qh], [0, qh]], np.float32).reshape(-1, 1, 2)
    on_original = cv2.transform(frame, inverse).reshape(-1, 2)
    xs = np.clip(on_original[:, 0], 0, width)
    ys = np.clip(on_original[:, 1], 0, height)
    visible_w, visible_h = float(xs.max() - xs.min()), float(ys.max() - ys.min())
    visible = min(1.0, visible_w * visible_h / float(width * height))
    origin = (float(xs.min()) / width, float(ys.min()) / height)  # mirrored: flipped back
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]],
                       np.float32).reshape(-1, 1, 2)
    on_query = cv2.transform(corners, matrix).reshape(-1, 2)
    coverage = min(1.0, float(on_query[:, 0].max() - on_query[:, 0].min()) / qw)
    return Placement(inliers=inliers, mirrored=mirrored, rotation=rotation, scale=scale,
                     visible=visible, origin=origin, coverage=coverage, guided=guided)
