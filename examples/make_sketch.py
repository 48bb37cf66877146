"""Rebuild examples/sketch.png: black line art on white paper (a mug, an apple with a leaf, a gift box with a
ribbon), the kind of drawing an artist hands to `lasagna colorize`, and examples/sketch-hints.png: the colour
dots an artist would put on it (`lasagna colorize examples/sketch.png --hints examples/sketch-hints.png`).
Run: python examples/make_sketch.py"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 512
INK = 0
WIDTH = 4


def build(path: Path) -> None:
    big = 4  # drawn at 4x and reduced: anti-aliased lines
    image = Image.new("L", (SIZE * big, SIZE * big), 255)
    draw = ImageDraw.Draw(image)

    def s(*xy: float) -> list[float]:
        return [v * big for v in xy]

    w = WIDTH * big
    # a mug: body, a band, a handle
    draw.rounded_rectangle(s(40, 200, 190, 400), radius=18 * big, outline=INK, width=w)
    draw.line(s(40, 260, 190, 260), fill=INK, width=w)
    draw.arc(s(150, 250, 220, 330), start=-90, end=90, fill=INK, width=w)
    # an apple, its leaf and stalk
    draw.ellipse(s(232, 250, 352, 390), outline=INK, width=w)
    draw.line(s(292, 252, 296, 215), fill=INK, width=w)
    draw.ellipse(s(298, 205, 346, 232), outline=INK, width=w)
    # a gift box: lid, box, ribbon
    draw.rectangle(s(370, 230, 490, 400), outline=INK, width=w)
    draw.rectangle(s(360, 200, 500, 232), outline=INK, width=w)
    draw.line(s(430, 200, 430, 400), fill=INK, width=w)
    draw.line(s(415, 200, 415, 400), fill=INK, width=w)
    draw.line(s(30, 402, 510, 402), fill=INK, width=w)  # the table's edge
    image.resize((SIZE, SIZE), Image.LANCZOS).convert("RGB").save(path)


HINTS = (  # (x, y, colour): one dot per region worth a colour
    (115, 330, (52, 101, 164)), (115, 230, (240, 240, 235)), (292, 330, (200, 30, 40)), (322, 218, (80, 160, 60)),
    (395, 320, (230, 180, 40)), (470, 320, (230, 180, 40)), (395, 216, (200, 40, 120)), (470, 216, (200, 40, 120)),
    (422, 320, (200, 40, 120)), (422, 216, (200, 40, 120)),
)


def build_hints(path: Path) -> None:
    image = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for x, y, colour in HINTS:
        draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=(*colour, 255))
    image.save(path)


if __name__ == "__main__":
    for name, make in (("sketch.png", build), ("sketch-hints.png", build_hints)):
        out = Path(__file__).with_name(name)
        make(out)
        print(f"wrote {out}")
