#!/usr/bin/python3
"""Regenerates the golden files into a scratch directory and compares them with the committed
ones: images and JSON byte for byte, tensors exactly for integers and within 1e-5 (relative to
the tensor's scale) for floats (the BLAS under PyTorch may change the last bits).

    /usr/bin/python3 tests/golden/check_reproducible.py SCRATCH_DIR
"""
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402

GENERATORS = {"gen_llava_golden.py": "llava_tiny", "gen_image_golden.py": "images",
              "gen_llava_next_golden.py": "llava_next_tiny"}


def main(work):
    failures = []
    for script, sub in GENERATORS.items():
        out = os.path.join(work, sub)
        subprocess.run([sys.executable, os.path.join(HERE, script), out], check=True,
                       stdout=subprocess.DEVNULL)
        committed = os.path.join(HERE, sub)
        names = sorted(os.path.relpath(os.path.join(root, f), committed)
                       for root, _, files in os.walk(committed) for f in files)
        for name in names:
            a, b = os.path.join(committed, name), os.path.join(out, name)
            if not os.path.exists(b):
                failures.append(f"{sub}/{name}: not generated any more")
            elif name.endswith(".safetensors"):
                ta, tb = safetensors_io.load(a), safetensors_io.load(b)
                if ta.keys() != tb.keys():
                    failures.append(f"{sub}/{name}: tensor names differ")
                    continue
                for k in ta:
                    x, y = ta[k], tb[k]
                    if x.shape != y.shape or x.dtype != y.dtype:
                        failures.append(f"{sub}/{name}: {k}: shape or dtype differs")
                    elif x.is_floating_point():
                        scale = max(1.0, float(x.float().abs().max()))
                        err = float((x.float() - y.float()).abs().max()) if x.numel() else 0.0
                        if err > 1e-5 * scale:
                            failures.append(f"{sub}/{name}: {k}: max difference {err:g}")
                    elif not torch.equal(x, y):
                        failures.append(f"{sub}/{name}: {k}: values differ")
            else:
                with open(a, "rb") as fa, open(b, "rb") as fb:
                    if fa.read() != fb.read():
                        failures.append(f"{sub}/{name}: bytes differ")
        print(f"{sub}: checked against {script}")
    for f in failures:
        print("MISMATCH", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
