#!/usr/bin/python3
"""Writes the seed inputs of tests/fuzz/corpus/<target>/seed-* (run with /usr/bin/python3).

Seeds are small valid inputs and slightly broken variants of them. Inputs that crashed or hung
a target (crash-*, timeout-*, oom-*) are added by scripts/fuzz.sh and kept by hand; this script
never touches them. Re-running it rewrites the seed-* files only.
"""
import json
import re
import os
import shutil
import struct
import sys

import zlib

import yaml  # python3-yaml (Debian)


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where `1e-4` is a string; the job-spec parser reads 1.2 floats."""


Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$"),
    list("-+0123456789."))

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None, header_override=None, pad=True):
    """tensors: [(name, dtype, shape, raw bytes)] -> file bytes."""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    text = (header_override if header_override is not None else json.dumps(header)).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def seeds_safetensors():
    t = "fuzz_safetensors_header"
    f32 = struct.pack("<4f", 1.0, -2.5, 3.25, 0.0)
    write(t, "valid-f32", safetensors([("w", "F32", [2, 2], f32)], {"format": "pt"}))
    write(t, "valid-mixed", safetensors([
        ("a", "F16", [3], struct.pack("<3e", 1.0, 0.5, -2.0)),
        ("b", "BF16", [2], bytes([0x80, 0x3F, 0x00, 0xC0])),
        ("c", "I64", [1, 2], struct.pack("<2q", -7, 1 << 40)),
        ("d", "U8", [4], bytes([0, 1, 254, 255])),
        ("e", "BOOL", [2], bytes([0, 1])),
        ("f", "F64", [1], struct.pack("<d", 3.5)),
        ("g", "I32", [2], struct.pack("<2i", -1, 2)),
        ("h", "I16", [1], struct.pack("<h", -3)),
        ("i", "I8", [1], struct.pack("<b", -4)),
        ("scalar", "F32", [], struct.pack("<f", 9.0)),
        ("empty", "F32", [0, 3], b""),
    ], {"a": "b"}))
    write(t, "empty-header", safetensors([], None))
    write(t, "truncated-length", b"\x10\x00\x00")
    write(t, "header-past-end", struct.pack("<Q", 1000) + b"{}")
    write(t, "huge-header-length", struct.pack("<Q", 1 << 62) + b"{}")
    write(t, "not-json", struct.pack("<Q", 8) + b"{not js}")
    write(t, "bad-dtype", safetensors([("w", "F8", [4], b"\0" * 4)]))
    write(t, "offsets-out-of-range", safetensors([], header_override='{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,64]}}'))
    write(t, "size-mismatch", safetensors([("w", "F32", [3], f32)]))
    write(t, "overlap", safetensors([], header_override=(
        '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}')) + f32)
    write(t, "negative-dim", safetensors([], header_override='{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}'))
    write(t, "huge-dims-zero-numel", safetensors([], header_override=(
        '{"w":{"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]}}')))
    write(t, "metadata-not-string", safetensors([("w", "F32", [1], f32[:4])], {"k": 1}))
    write(t, "shape-not-list", safetensors([], header_override='{"w":{"dtype":"F32","shape":4,"data_offsets":[0,16]}}') + f32)


NATIVE = {"id": "train-0-colour", "image": "images/train-0.png", "image_id": "train-0",
          "question": "What color is the kite?", "chosen": "The kite is purple.",
          "rejected": "The kite is red.", "type": "colour", "answer": "purple",
          "regions": [{"label": "kite", "box": [8, 18, 36, 46]}]}


def seeds_preference():
    t = "fuzz_preference_record"
    line = lambda o: json.dumps(o) + "\n"
    write(t, "valid-native", line(NATIVE))
    poly = dict(NATIVE, id="p", rejected_image="rej/p.png",
                regions=[{"label": "kite", "polygon": [[1, 2], [30, 4], [12.5, 40]]}, {"label": "cat", "box": [0, 0, 5, 5]}])
    write(t, "valid-polygon", line(poly))
    write(t, "valid-two-lines", line(NATIVE) + "\n  \n" + line(dict(NATIVE, id="b", extra={"nested": [1, {"x": None}]})))
    write(t, "missing-chosen", line({k: v for k, v in NATIVE.items() if k != "chosen"}))
    write(t, "wrong-type", line(dict(NATIVE, question=7)))
    write(t, "empty-string", line(dict(NATIVE, rejected="  ")))
    write(t, "box-reversed", line(dict(NATIVE, regions=[{"label": "k", "box": [36, 46, 8, 18]}])))
    write(t, "box-floats", line(dict(NATIVE, regions=[{"label": "k", "box": [1.5, 2, 1e9, 4]}])))
    write(t, "polygon-short", line(dict(NATIVE, regions=[{"label": "k", "polygon": [[1, 2], [3, 4]]}])))
    write(t, "regions-not-list", line(dict(NATIVE, regions={"box": [1, 2, 3, 4]})))
    write(t, "not-object", "[1, 2, 3]\n")
    write(t, "not-json", '{"id": "x", "image": \n')
    write(t, "unicode", line(dict(NATIVE, question="Wh\u00e4t c\u00f6lour? \U0001F600", id="\u2581u")))
    write(t, "nested-10", line(dict(NATIVE, extra=json.loads("[" * 10 + "]" * 10))))


def seeds_job_spec():
    t = "fuzz_job_spec"
    examples = os.path.join(ROOT, "docs", "examples")
    for name in sorted(os.listdir(examples)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(examples, name), "rb") as f:
            text = f.read()
        stem = name[:-5]
        write(t, "yaml-" + stem, b"\x00" + text)  # even first byte: YAML
        write(t, "json-" + stem, b"\x01" + json.dumps(yaml.load(text, Loader=Yaml12Loader), indent=1).encode())  # odd: JSON
    write(t, "yaml-unknown-field", b"\x00name: x\noutput_dir: o\nmodel: {path: m}\ndata: {train: t}\nbogus: 1\n")
    write(t, "yaml-wrong-type", b"\x00name: x\noutput_dir: o\nmodel: {path: m}\ndata: {train: t}\noptimizer: {lr: fast}\n")
    write(t, "yaml-alias", b"\x00name: &n x\noutput_dir: *n\nmodel: {path: m}\ndata: {train: t}\n")
    write(t, "yaml-range", b"\x00output_dir: o\nmodel: {path: m}\ndata: {train: t}\nobjective: {beta: -1}\noptimizer: {micro_batch: 0}\n")
    write(t, "yaml-broken", b"\x00name: [x\noutput_dir: o\n")
    write(t, "json-broken", b"\x01{\"name\": \"x\", \"output_dir\": }")
    write(t, "json-array", b"\x01[1, 2]")
    write(t, "yaml-scalars", b"\x00seed: 18446744073709551615\nname: ~\noptimizer: {lr: .inf, epochs: 1e3}\nresources: {threads: -1}\n")


def seeds_image():
    t = "fuzz_image"
    images = os.path.join(ROOT, "tests", "golden", "images")
    for name in ["small.png", "tall.png", "wide.png", "wide.jpg", "wide.webp", "small_resized_32.png"]:
        with open(os.path.join(images, name), "rb") as f:
            data = f.read()
        stem = name.replace(".", "-")
        write(t, stem, data)
    with open(os.path.join(images, "wide.jpg"), "rb") as f:
        jpg = f.read()
    with open(os.path.join(images, "small.png"), "rb") as f:
        png = f.read()
    with open(os.path.join(images, "wide.webp"), "rb") as f:
        webp = f.read()
    write(t, "truncated-jpg", jpg[: len(jpg) // 2])
    write(t, "truncated-png", png[: len(png) // 2])
    write(t, "truncated-webp", webp[:40])
    # PNG whose header claims 100000 x 100000 (refused from the header, before decoding).
    write(t, "png-huge-header", png[:16] + struct.pack(">II", 100000, 100000) + png[24:])
    write(t, "png-wide-line", png[:16] + struct.pack(">II", 3_000_000, 1) + png[24:])
    write(t, "not-an-image", b"GIF89a\x01\x00\x01\x00")
    # Real grey PNGs of one long line: decodable, within the decoder's pixel limit, but the
    # square canvas of PreprocessImage's pad-to-square would be width^2 pixels.
    write(t, "png-2000x1", grey_png(2000, 1))
    write(t, "png-1x3000000", grey_png(1, 3_000_000))


def grey_png(width, height):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    raw = (b"\x00" + b"\x80" * width) * height  # filter byte 0 per row
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) +
            chunk(b"IEND", b""))


def main():
    if len(sys.argv) > 1:
        sys.exit("usage: make_seeds.py")
    seeds_safetensors()
    seeds_preference()
    seeds_job_spec()
    seeds_image()


if __name__ == "__main__":
    main()
