"""Draw the OncoSeg icon (128x128 PNG) with Pillow: a CT-like slice with a segmented lesion and a prompt point.

Run from the repository root: ``python OncoSeg/Resources/Icons/make_icon.py``; writes OncoSeg.png here and at the
repository root (the extension icon). Deterministic: the same Pillow gives the same bytes.
"""

from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 128


def draw() -> Image.Image:
    img = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((4, 4, 123, 123), radius=22, fill=(24, 32, 48, 255))
    d.ellipse((16, 22, 112, 106), fill=(92, 98, 108, 255))  # body
    d.ellipse((24, 30, 80, 84), fill=(140, 118, 110, 255))  # liver
    d.ellipse((84, 52, 100, 80), fill=(200, 200, 205, 255))  # spine-ish bright structure
    d.ellipse((40, 44, 66, 70), fill=(232, 86, 64, 230), outline=(255, 214, 102, 255), width=3)  # lesion
    d.ellipse((50, 54, 58, 62), fill=(80, 220, 120, 255), outline=(255, 255, 255, 255), width=2)  # + point
    d.rectangle((32, 36, 74, 78), outline=(255, 214, 102, 255), width=2)  # box prompt
    return img


def main() -> None:
    here = Path(__file__).resolve().parent
    img = draw()
    for out in (here / "OncoSeg.png", here.parents[2] / "OncoSeg.png"):
        img.save(out, optimize=True)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
