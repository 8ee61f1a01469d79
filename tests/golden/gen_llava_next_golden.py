#!/usr/bin/python3
"""Golden reference for the C++ LLaVA-NeXT (LLaVA-1.6): any-resolution image processing, feature
packing, logits, response log-probs and greedy generation.

An independent implementation written from transformers' LlavaNextImageProcessor and
LlavaNextForConditionalGeneration, in plain Pillow / NumPy / PyTorch ops:
  * the processor: select_best_resolution over image_grid_pinpoints, an aspect-preserving
    Pillow bicubic resize into the best resolution (the short side rounded up), zero padding
    centred in it, crop_size tiles in row-major order, preceded by the whole image resized to
    size x size; every view rescaled and CLIP-normalised;
  * the packing: the whole image's features, then the tiles' feature grid assembled tile by tile,
    unpadded to the image's aspect ratio, each row followed by image_newline;
  * the decoder: the Llama of gen_llava_golden.py; the Mistral variant adds its sliding window.
Each sequence runs alone, unpadded, without a cache. The C++ side batches images of different
sizes (so rows have different image-token counts), pads and caches.

Run with Debian's interpreter from the repository root:
    /usr/bin/python3 tests/golden/gen_llava_next_golden.py tests/golden/llava_next_tiny
Writes two model directories (llama/ and mistral/: config.json, preprocessor_config.json,
model.safetensors in the newer transformers layout), the test images (images/*.png) and
golden.safetensors in each model directory.
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_llava_golden as base  # noqa: E402  (weights, CLIP tower, projector, Llama layers)
import safetensors_io  # noqa: E402

V, T = base.V, base.T
CROP = V["image"]                 # 16 px tiles
SIDE = V["image"] // V["patch"]   # 4 x 4 features per tile
PINPOINTS = [[16, 32], [32, 16], [32, 32], [48, 16], [16, 48]]  # LLaVA-NeXT's grid, scaled
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_TOKEN, PAD = base.IMAGE_TOKEN, base.PAD
# (name, width, height): wide, tall, square, and smaller than one tile.
IMAGES = [("wide", 50, 20), ("tall", 18, 45), ("square", 30, 30), ("tiny", 5, 3)]
SLIDING_WINDOW = 24  # the Mistral variant: shorter than every sequence, so the window matters


# ---- image processor ------------------------------------------------------------------------

def select_best_resolution(h, w):
    best, best_eff, best_waste = None, 0, float("inf")
    for ph, pw in PINPOINTS:
        scale = min(pw / w, ph / h)
        eff = min(int(w * scale) * int(h * scale), w * h)
        waste = ph * pw - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (ph, pw), eff, waste
    return best


def normalise(img):
    a = np.asarray(img, dtype=np.float32) * np.float32(1 / 255)  # HWC
    a = (a - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


def process(img):
    """PIL RGB image -> [1 + tiles, 3, CROP, CROP]."""
    w, h = img.size
    th, tw = select_best_resolution(h, w)
    sw, sh = tw / w, th / h
    if sw < sh:
        nw, nh = tw, min(math.ceil(h * sw), th)
    else:
        nw, nh = min(math.ceil(w * sh), tw), th
    resized = img if (nw, nh) == (w, h) else img.resize((nw, nh), Image.BICUBIC)
    canvas = Image.new("RGB", (tw, th), (0, 0, 0))
    canvas.paste(resized, ((tw - nw) // 2, (th - nh) // 2))
    views = [img.resize((CROP, CROP), Image.BICUBIC) if img.size != (CROP, CROP) else img]
    for y in range(0, th, CROP):
        for x in range(0, tw, CROP):
            views.append(canvas.crop((x, y, x + CROP, y + CROP)))
    return torch.stack([normalise(v) for v in views])


# ---- packing --------------------------------------------------------------------------------

def unpadded(h, w, rows, cols):
    """(top, kept rows, left, kept cols) of a rows x cols feature grid for an h x w image."""
    if w / h > cols / rows:
        new_rows = int(round(h * (cols / w), 7))
        pad = (rows - new_rows) // 2
        return pad, rows - 2 * pad, 0, cols
    new_cols = int(round(w * (rows / h), 7))
    pad = (cols - new_cols) // 2
    return 0, rows, pad, cols - 2 * pad


def pack(feats, h, w, newline):
    """feats [1 + tiles, SIDE*SIDE, H] projected -> [tokens, H]."""
    th, tw = select_best_resolution(h, w)
    tr, tc = th // CROP, tw // CROP
    H = feats.shape[-1]
    grid = torch.zeros(tr * SIDE, tc * SIDE, H)
    for t in range(tr * tc):
        r, c = divmod(t, tc)
        grid[r * SIDE:(r + 1) * SIDE, c * SIDE:(c + 1) * SIDE] = feats[1 + t].view(SIDE, SIDE, H)
    top, nr, left, nc = unpadded(h, w, tr * SIDE, tc * SIDE)
    rows = []
    for i in range(top, top + nr):
        rows.append(grid[i, left:left + nc])
        rows.append(newline[None])
    return torch.cat([feats[0]] + rows, 0)


# ---- decoder --------------------------------------------------------------------------------

def logits_of(w, embeds, variant):
    return base.llama_logits(w, embeds, theta=variant.get("rope_theta"), window=variant.get("sliding_window", 0))


def embed(w, ids, feats):
    ids = torch.tensor(ids)
    e = w["language_model.model.embed_tokens.weight"][ids.clamp(max=T["vocab"] - 1)].clone()
    pos = (ids == IMAGE_TOKEN).nonzero().flatten()
    if len(pos):
        assert len(pos) == len(feats), (len(pos), len(feats))
        e[pos] = feats
    return e


def make_images(g, out):
    os.makedirs(out, exist_ok=True)
    imgs = {}
    for name, w, h in IMAGES:
        a = (torch.rand(h, w, 3, generator=g) * 256).clamp(max=255).to(torch.uint8).numpy()
        img = Image.fromarray(a, "RGB")
        img.save(os.path.join(out, name + ".png"))
        imgs[name] = img
    return imgs


def write_model(out_dir, w, text_extra):
    os.makedirs(out_dir, exist_ok=True)

    ckpt = base.newer_checkpoint(w)
    safetensors_io.save(os.path.join(out_dir, "model.safetensors"), ckpt, {"format": "pt"})
    text = {"model_type": "llama", "vocab_size": T["vocab"], "hidden_size": T["hidden"],
            "intermediate_size": T["inter"], "num_hidden_layers": T["layers"],
            "num_attention_heads": T["heads"], "num_key_value_heads": T["kv_heads"],
            "rms_norm_eps": T["eps"], "max_position_embeddings": 512}
    text.update(text_extra)
    config = {
        "architectures": ["LlavaNextForConditionalGeneration"], "model_type": "llava_next",
        "image_token_index": IMAGE_TOKEN, "pad_token_id": PAD, "projector_hidden_act": "gelu",
        "vision_feature_layer": base.FEATURE_LAYER, "vision_feature_select_strategy": "default",
        "image_grid_pinpoints": PINPOINTS,
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": V["hidden"],
                          "intermediate_size": V["inter"], "num_hidden_layers": V["layers"],
                          "num_attention_heads": V["heads"], "image_size": V["image"],
                          "patch_size": V["patch"]},
        "text_config": text,
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    pre = {"image_processor_type": "LlavaNextImageProcessor", "size": {"shortest_edge": CROP},
           "crop_size": {"height": CROP, "width": CROP}, "image_grid_pinpoints": PINPOINTS,
           "do_pad": True, "image_mean": list(MEAN), "image_std": list(STD)}
    with open(os.path.join(out_dir, "preprocessor_config.json"), "w") as f:
        json.dump(pre, f, indent=2)
        f.write("\n")


def golden_for(w, imgs, variant):
    names = [n for n, _, _ in IMAGES]
    pixels = {n: process(imgs[n]) for n in names}
    newline = w["image_newline"]
    packed = {}
    for n in names:
        img_w, img_h = imgs[n].size
        packed[n] = pack(base.vision_features(w, pixels[n]), img_h, img_w, newline)
    golden = {}
    for n in names:
        golden[f"pixels_{n}"] = pixels[n]
        golden[f"tokens_{n}"] = torch.tensor([len(packed[n])])

    def prompt(prefix, image, suffix):
        return [1] + prefix + [IMAGE_TOKEN] * len(packed[image]) + suffix

    # Scoring: one batch of rows with different images (and so image-token counts).
    seqs = [(prompt([5, 7], "wide", [11, 12, 13]) + [20, 21, 33, 2], "wide", 4),
            (prompt([6], "tall", [14, 15]) + [40, 41, 2], "tall", 3),
            (prompt([8, 9], "square", [16]) + [50, 2], "square", 2),
            (prompt([10], "tiny", [17, 18]) + [60, 61, 62, 2], "tiny", 5)]
    B, L = len(seqs), max(len(s) for s, _, _ in seqs)
    ids = torch.full((B, L), PAD, dtype=torch.int64)
    mask = torch.zeros(B, L, dtype=torch.int64)
    labels = torch.full((B, L), -100, dtype=torch.int64)
    logits_all = torch.zeros(B, L, T["vocab"])
    logp, entropy = torch.zeros(B), torch.zeros(B)
    for b, (s, image, k) in enumerate(seqs):
        n = len(s)
        ids[b, :n] = torch.tensor(s)
        mask[b, :n] = 1
        labels[b, n - k:n] = torch.tensor(s[n - k:])
        lg = logits_of(w, embed(w, s, packed[image]), variant)
        logits_all[b, :n] = lg
        lp = torch.log_softmax(lg.float(), -1)
        pred = lp[n - k - 1:n - 1]
        logp[b] = pred.gather(1, torch.tensor(s[n - k:])[:, None]).sum()
        entropy[b] = (-(pred.exp() * pred).sum(-1)).mean()
    golden.update(input_ids=ids, attention_mask=mask, labels=labels, logits=logits_all,
                  response_logp=logp, response_entropy=entropy,
                  image_order=torch.tensor([names.index(image) for _, image, _ in seqs]))

    # Greedy generation, no cache, each prompt alone; different lengths for left padding.
    gen_prompts = [(prompt([5, 7], "tiny", [11, 12, 13]), "tiny"),
                   (prompt([6], "wide", [14, 15, 16, 17, 18, 19]), "wide")]
    max_new = 8
    gen = torch.full((len(gen_prompts), max_new), -1, dtype=torch.int64)
    for b, (p, image) in enumerate(gen_prompts):
        s = list(p)
        for t in range(max_new):
            nxt = int(logits_of(w, embed(w, s, packed[image]), variant)[-1].argmax())
            gen[b, t] = nxt
            s.append(nxt)
            if nxt == 2:
                break
    Lp = max(len(p) for p, _ in gen_prompts)
    gp = torch.full((len(gen_prompts), Lp), -1, dtype=torch.int64)
    for b, (p, _) in enumerate(gen_prompts):
        gp[b, :len(p)] = torch.tensor(p)
    golden.update(gen_prompts=gp, gen_ids=gen,
                  gen_image_order=torch.tensor([names.index(i) for _, i in gen_prompts]))
    return golden, gen


def main(out_dir):
    torch.set_grad_enabled(False)
    g = torch.Generator().manual_seed(4321)
    w = base.make_weights(g)
    w["image_newline"] = torch.randn(T["hidden"], generator=g) * base.STD
    imgs = make_images(g, os.path.join(out_dir, "images"))
    for sub, variant in (("llama", {}),
                         ("mistral", {"model_type": "mistral", "sliding_window": SLIDING_WINDOW,
                                      "rope_theta": 1000000.0})):
        d = os.path.join(out_dir, sub)
        write_model(d, w, variant)
        golden, gen = golden_for(w, imgs, variant)
        safetensors_io.save(os.path.join(d, "golden.safetensors"), golden)
        print("wrote", d, "tokens:", {n: int(golden[f'tokens_{n}']) for n, _, _ in IMAGES},
              "generated:", gen.tolist())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "llava_next_tiny"))
