#!/usr/bin/python3
"""Shrinks dashboard screenshots for docs/screenshots/: at most WIDTH pixels
wide, 256-colour palette, so that each PNG stays well under 150 KB.
Usage: scripts/shrink_screenshots.py SRC.png DST.png [WIDTH]"""
import sys

from PIL import Image

src, dst = sys.argv[1], sys.argv[2]
width = int(sys.argv[3]) if len(sys.argv) > 3 else 900
img = Image.open(src).convert("RGB")
if img.width > width:
    img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(dst, optimize=True)
