"""Real photographs that packages ship, and the edits platforms see, for the image-edits
benchmark and its tests.

Photos: scikit-image's bundled samples (no download) and, when installed, the photographs of
Debian's `mate-backgrounds` (its `nature` folder). Each edit takes the original (RGB, Pillow),
a random generator and an unrelated photo (for picture-in-picture), and returns the edited
image; `EXPECT` says which words the match explanation must contain.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

__all__ = ["EDITS", "EXPECT", "encode", "photos"]

_SKIMAGE = ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "moon.png",
            "hubble_deep_field.jpg", "rocket.jpg", "motorcycle_left.png", "retina.jpg",
            "page.png", "grass.png", "gravel.png", "brick.png", "cell.png", "ihc.png",
            "microaneurysms.png")
"""scikit-image's bundled photographs (its drawings and synthetic images left out)."""
MATE_NATURE = Path("/usr/share/backgrounds/mate/nature")


def photos(limit: int | None = None, long_side: int = 1024) -> list[tuple[str, Image.Image]]:
    """(name, RGB image at most `long_side` px) of every real photo found, sorted by name."""
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    out = [(f"skimage/{name.split('.')[0]}", Image.open(folder / name).convert("RGB"))
           for name in _SKIMAGE]
    if MATE_NATURE.is_dir():
        for path in sorted(MATE_NATURE.glob("*.jpg")):
            out.append((f"mate-backgrounds/{path.stem}", Image.open(path).convert("RGB")))
    for _, image in out:
        image.thumbnail((long_side, long_side))
    return out[:limit]


def encode(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


Edit = Callable[[Image.Image, random.Random, Image.Image], Image.Image]


def _crop(share: float, centred: bool) -> Edit:
    def edit(im: Image.Image, rng: random.Random, _: Image.Image) -> Image.Image:
        side = share ** 0.5
        w, h = round(im.width * side), round(im.height * side)
        if centred:
            x, y = (im.width - w) // 2, (im.height - h) // 2
        else:
            x, y = rng.choice([(0, 0), (im.width - w, 0), (0, im.height - h),
                               (im.width - w, im.height - h)])
        return im.crop((x, y, x + w, y + h))
    return edit


def _bars(im: Image.Image, wide: float, tall: float) -> Image.Image:
    """Letterbox (black bars above and below) or pillarbox (left and right)."""
    frame = Image.new("RGB", (round(im.width * wide), round(im.height * tall)), (0, 0, 0))
    frame.paste(im, ((frame.width - im.width) // 2, (frame.height - im.height) // 2))
    return frame


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, size: int,
          fill: tuple[int, int, int], stroke: int = 0) -> None:
    from PIL import ImageFont

    font = ImageFont.load_default(size=size)
    draw.text(xy, text, font=font, fill=fill, stroke_width=stroke, stroke_fill=(0, 0, 0))


def _caption(im: Image.Image, rng: random.Random, _: Image.Image) -> Image.Image:
    bar = round(im.height * 0.22)
    out = Image.new("RGB", (im.width, im.height + bar), (255, 255, 255))
    out.paste(im, (0, bar))
    _text(ImageDraw.Draw(out), (im.width // 20, bar // 4), "when the build finally passes",
          max(10, bar // 3), (0, 0, 0))
    return out


def _meme(im: Image.Image, rng: random.Random, _: Image.Image) -> Image.Image:
    out = im.copy()
    draw = ImageDraw.Draw(out)
    size = max(12, im.height // 9)
    _text(draw, (im.width // 12, im.height // 30), "ONE DOES NOT SIMPLY", size,
          (255, 255, 255), stroke=3)
    _text(draw, (im.width // 12, im.height - size * 3 // 2), "REGISTER A CROP", size,
          (255, 255, 255), stroke=3)
    return out


def _watermark(im: Image.Image, rng: random.Random, _: Image.Image) -> Image.Image:
    out = im.copy()
    draw = ImageDraw.Draw(out)
    w, h = im.width // 3, im.height // 6
    x, y = im.width - w - im.width // 30, im.height - h - im.height // 30
    draw.rectangle((x, y, x + w, y + h), fill=(230, 40, 40))
    _text(draw, (x + w // 10, y + h // 4), "NEWS24", h // 2, (255, 255, 255))
    draw.ellipse((im.width // 30, im.height // 30, im.width // 30 + h, im.height // 30 + h),
                 fill=(20, 20, 160))
    return out


def _screenshot(share: float) -> Edit:
    """The picture at `share` of the width of a web page: a header bar, lines of text."""
    def edit(im: Image.Image, rng: random.Random, _: Image.Image) -> Image.Image:
        page_w = 1280
        pic = im.resize((round(page_w * share), round(page_w * share * im.height / im.width)))
        page = Image.new("RGB", (page_w, pic.height + 260), (250, 250, 250))
        draw = ImageDraw.Draw(page)
        draw.rectangle((0, 0, page_w, 60), fill=(40, 60, 90))
        _text(draw, (20, 15), "example news · photos", 28, (255, 255, 255))
        x = rng.randint(20, max(20, page_w - pic.width - 20))
        page.paste(pic, (x, 100))
        for line in range(4):
            y = 120 + pic.height + line * 30
            draw.rectangle((40, y, page_w - rng.randint(60, 400), y + 12), fill=(120, 120, 120))
        return page
    return edit


def _pip(im: Image.Image, rng: random.Random, other: Image.Image) -> Image.Image:
    """The picture as an inset at 40 % of the width over an unrelated photo."""
    out = other.resize((1024, round(1024 * other.height / other.width)))
    inset = im.resize((round(out.width * 0.4), round(out.width * 0.4 * im.height / im.width)))
    if inset.height > out.height * 0.8:
        inset.thumbnail((inset.width, round(out.height * 0.8)))
    out.paste(inset, (out.width - inset.width - 20, out.height - inset.height - 20))
    return out


EDITS: dict[str, Edit] = {
    "jpeg_q30": lambda im, r, o: Image.open(io.BytesIO(encode(im, 30))).convert("RGB"),
    "resize_25": lambda im, r, o: im.resize((max(1, im.width // 4), max(1, im.height // 4)),
                                            Image.Resampling.BICUBIC),
    "brightness": lambda im, r, o: ImageEnhance.Brightness(im).enhance(1.2),
    "blur": lambda im, r, o: im.filter(ImageFilter.GaussianBlur(2)),
    "mirror": lambda im, r, o: ImageOps.mirror(im),
    "rotate_90": lambda im, r, o: im.transpose(Image.Transpose.ROTATE_270),  # 90° clockwise
    "rotate_180": lambda im, r, o: im.transpose(Image.Transpose.ROTATE_180),
    "rotate_270": lambda im, r, o: im.transpose(Image.Transpose.ROTATE_90),
    "border": lambda im, r, o: ImageOps.expand(im, border=max(8, im.width // 12),
                                               fill=(255, 255, 255)),
    "letterbox": lambda im, r, o: _bars(im, 1.0, 1.35),
    "pillarbox": lambda im, r, o: _bars(im, 1.35, 1.0),
    "crop_90": _crop(0.9, centred=True),
    "crop_70": _crop(0.7, centred=False),
    "crop_50_centred": _crop(0.5, centred=True),
    "crop_50_corner": _crop(0.5, centred=False),
    "caption_bar": _caption,
    "meme_text": _meme,
    "watermark_logo": _watermark,
    "screenshot_40": _screenshot(0.4),
    "screenshot_60": _screenshot(0.6),
    "screenshot_80": _screenshot(0.8),
    "picture_in_picture": _pip,
}

EXPECT: dict[str, str] = {
    "mirror": "mirrored",
    "rotate_90": "rotated 90°",
    "rotate_180": "rotated 180°",
    "rotate_270": "rotated 270°",
    "crop_70": "crop of",
    "crop_50_centred": "crop of",
    "crop_50_corner": "crop of",
    "screenshot_40": "inside a larger image",
    "screenshot_60": "inside a larger image",
    "screenshot_80": "inside a larger image",
    "picture_in_picture": "inside a larger image",
}
"""Words the explanation of the right work's best match must contain, per edit class."""
