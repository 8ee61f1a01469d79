#!/usr/bin/python3
"""Golden reference for the image pipeline, computed with Pillow (what transformers uses).

For a few procedural test images (PNG, plus a JPEG and a WebP of the first) writes:
  <name>.png                   the input
  <name>_resized_<S>.png       PIL: expand2square with the CLIP mean colour, resize to SxS BICUBIC
  wide_jpg_decoded.png         Pillow's decode of wide.jpg
  pipeline.safetensors         the normalised CHW tensors (LLaVA-1.5 preprocessing) per image
The C++ resize must match within one 8-bit level per pixel; the tensors within 1 level / std.

Run with Debian's interpreter from the repository root:
    /usr/bin/python3 tests/golden/gen_image_golden.py tests/golden/images
"""
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def make(w, h, seed):
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256], -1)
    img = Image.fromarray(a.astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(6):  # hard edges: where a wrong kernel shows most
        x0, y0 = rng.randint(0, w), rng.randint(0, h)
        x1, y1 = x0 + rng.randint(2, max(3, w // 2)), y0 + rng.randint(2, max(3, h // 2))
        d.rectangle([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.randint(0, 256, 3)))
    noise = rng.randint(-20, 21, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img).astype(int) + noise, 0, 255).astype(np.uint8))


def expand2square(img, bg):
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), bg)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def pipeline(img, size):
    sq = expand2square(img, tuple(int(x * 255) for x in MEAN))
    r = sq.resize((size, size), Image.BICUBIC)
    a = np.asarray(r).astype(np.float32) * np.float32(1 / 255)
    a = (a - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return r, torch.from_numpy(a.transpose(2, 0, 1).copy())


def main(out):
    os.makedirs(out, exist_ok=True)
    cases = {"wide": (53, 37, 1), "tall": (40, 64, 2), "big": (300, 200, 3), "small": (12, 12, 4)}
    tensors = {}
    for name, (w, h, seed) in cases.items():
        img = make(w, h, seed)
        img.save(os.path.join(out, f"{name}.png"))
        for size in (32, 336) if name == "big" else (32,):
            r, t = pipeline(img, size)
            r.save(os.path.join(out, f"{name}_resized_{size}.png"))
            if size == 32:  # the 336 case checks the resize only (keeps the file small)
                tensors[f"{name}_{size}"] = t
    # The same picture as JPEG and WebP: decoded by OpenCV in C++, by Pillow here.
    img = make(53, 37, 1)
    img.save(os.path.join(out, "wide.jpg"), quality=95)
    img.save(os.path.join(out, "wide.webp"), lossless=True)
    Image.open(os.path.join(out, "wide.jpg")).convert("RGB").save(os.path.join(out, "wide_jpg_decoded.png"))
    safetensors_io.save(os.path.join(out, "pipeline.safetensors"), tensors)
    print("wrote", out, sorted(tensors))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "images"))
