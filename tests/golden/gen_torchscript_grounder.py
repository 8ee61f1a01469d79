#!/usr/bin/env python3
"""Writes tests/golden/torchscript/brightness_grounder.pt: a TorchScript module that follows the
`torchscript` grounder contract (datagen/grounder.h), used by datagen's grounder test.

  forward(image: Tensor[1, 3, H, W] float32 RGB in [0, 1], text: str) -> Tensor[1, 1, H/2, W/2]

The logits are (mean brightness - 0.5) at half resolution (so the grounder must resize them), and
-1 everywhere when text == "nothing" (the grounder must then report "not found").

Run with Debian's interpreter: /usr/bin/python3 tests/golden/gen_torchscript_grounder.py
"""
import os

import torch
import torch.nn.functional as F


class BrightnessGrounder(torch.nn.Module):
    def forward(self, image: torch.Tensor, text: str) -> torch.Tensor:
        small = F.avg_pool2d(image, 2)
        logits = small.mean(dim=1, keepdim=True) - 0.5
        if text == "nothing":
            logits = torch.full_like(logits, -1.0)
        return logits


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torchscript", "brightness_grounder.pt")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    module = torch.jit.script(BrightnessGrounder())
    module.save(out)
    print("wrote", out)


if __name__ == "__main__":
    main()
