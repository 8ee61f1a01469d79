#!/usr/bin/python3
"""Golden reference for the C++ LLaVA forward, response log-probs and greedy generation.

An independent implementation of LLaVA-1.5 (CLIP ViT pre-LN -> GELU projector -> Llama with
rotate_half RoPE, GQA and RMSNorm) in plain PyTorch ops, written from the Hugging Face model
definitions. Each sequence is run on its own, unpadded; generation recomputes the whole sequence
at every step (no cache). The C++ side pads, batches and caches, so agreement checks those too.

Weights are drawn with std 0.2 (not 0.02): at that scale a wrong RoPE layout, vision layer or
GQA head mapping moves the logits by far more than the 1e-4 tolerance.

Run with Debian's interpreter from the repository root:
    /usr/bin/python3 tests/golden/gen_llava_golden.py tests/golden/llava_tiny
Writes config.json, model.safetensors (newer transformers names, mixed F32/F16/BF16, plus an
unused post_layernorm and position_ids buffers, as hub checkpoints have) and golden.safetensors.
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

V = dict(hidden=32, inter=64, layers=3, heads=4, image=16, patch=4, eps=1e-5)
T = dict(vocab=96, hidden=64, inter=96, layers=2, heads=4, kv_heads=2, eps=1e-5, theta=10000.0)
IMAGE_TOKEN, PAD = 90, 91
FEATURE_LAYER = -2
N_PATCH = (V["image"] // V["patch"]) ** 2
STD = 0.2


def make_weights(g):
    w = {}

    def rnd(*shape):
        return torch.randn(*shape, generator=g) * STD

    def norm(n):  # near-1 weights so that the multiply is exercised
        return 1.0 + 0.1 * torch.randn(n, generator=g)

    D, I = V["hidden"], V["inter"]
    p = "vision_tower.vision_model."
    w[p + "embeddings.class_embedding"] = rnd(D)
    w[p + "embeddings.patch_embedding.weight"] = rnd(D, 3, V["patch"], V["patch"])
    w[p + "embeddings.position_embedding.weight"] = rnd(N_PATCH + 1, D)
    w[p + "pre_layrnorm.weight"], w[p + "pre_layrnorm.bias"] = norm(D), rnd(D)
    for i in range(V["layers"]):
        q = p + f"encoder.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w[q + f"self_attn.{n}.weight"], w[q + f"self_attn.{n}.bias"] = rnd(D, D), rnd(D)
        w[q + "layer_norm1.weight"], w[q + "layer_norm1.bias"] = norm(D), rnd(D)
        w[q + "layer_norm2.weight"], w[q + "layer_norm2.bias"] = norm(D), rnd(D)
        w[q + "mlp.fc1.weight"], w[q + "mlp.fc1.bias"] = rnd(I, D), rnd(I)
        w[q + "mlp.fc2.weight"], w[q + "mlp.fc2.bias"] = rnd(D, I), rnd(D)
    H, TI = T["hidden"], T["inter"]
    hd = H // T["heads"]
    w["multi_modal_projector.linear_1.weight"] = rnd(H, D)
    w["multi_modal_projector.linear_1.bias"] = rnd(H)
    w["multi_modal_projector.linear_2.weight"] = rnd(H, H)
    w["multi_modal_projector.linear_2.bias"] = rnd(H)
    m = "language_model.model."
    w[m + "embed_tokens.weight"] = rnd(T["vocab"], H)
    for i in range(T["layers"]):
        q = m + f"layers.{i}."
        w[q + "self_attn.q_proj.weight"] = rnd(T["heads"] * hd, H)
        w[q + "self_attn.k_proj.weight"] = rnd(T["kv_heads"] * hd, H)
        w[q + "self_attn.v_proj.weight"] = rnd(T["kv_heads"] * hd, H)
        w[q + "self_attn.o_proj.weight"] = rnd(H, T["heads"] * hd)
        w[q + "mlp.gate_proj.weight"] = rnd(TI, H)
        w[q + "mlp.up_proj.weight"] = rnd(TI, H)
        w[q + "mlp.down_proj.weight"] = rnd(H, TI)
        w[q + "input_layernorm.weight"] = norm(H)
        w[q + "post_attention_layernorm.weight"] = norm(H)
    w[m + "norm.weight"] = norm(H)
    w["language_model.lm_head.weight"] = rnd(T["vocab"], H)
    # Stored at lower precision: the reference uses the rounded values, C++ must convert alike.
    w[m + "embed_tokens.weight"] = w[m + "embed_tokens.weight"].half().float()
    w["language_model.lm_head.weight"] = w["language_model.lm_head.weight"].bfloat16().float()
    return w


def vision_features(w, pixels):
    p = "vision_tower.vision_model."
    x = F.conv2d(pixels, w[p + "embeddings.patch_embedding.weight"], stride=V["patch"])
    x = x.flatten(2).transpose(1, 2)
    cls = w[p + "embeddings.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], 1) + w[p + "embeddings.position_embedding.weight"]
    x = F.layer_norm(x, (V["hidden"],), w[p + "pre_layrnorm.weight"], w[p + "pre_layrnorm.bias"], V["eps"])
    hidden_states = [x]
    heads, hd = V["heads"], V["hidden"] // V["heads"]
    for i in range(V["layers"]):
        q = p + f"encoder.layers.{i}."
        h = F.layer_norm(x, (V["hidden"],), w[q + "layer_norm1.weight"], w[q + "layer_norm1.bias"], V["eps"])
        B, S, D = h.shape

        def proj(n):
            return F.linear(h, w[q + f"self_attn.{n}.weight"], w[q + f"self_attn.{n}.bias"]).view(B, S, heads, hd).transpose(1, 2)

        att = torch.softmax(proj("q_proj") @ proj("k_proj").transpose(-1, -2) / math.sqrt(hd), -1)
        o = (att @ proj("v_proj")).transpose(1, 2).reshape(B, S, D)
        x = x + F.linear(o, w[q + "self_attn.out_proj.weight"], w[q + "self_attn.out_proj.bias"])
        h = F.layer_norm(x, (V["hidden"],), w[q + "layer_norm2.weight"], w[q + "layer_norm2.bias"], V["eps"])
        h = F.linear(h, w[q + "mlp.fc1.weight"], w[q + "mlp.fc1.bias"])
        h = h * torch.sigmoid(1.702 * h)  # quick_gelu
        x = x + F.linear(h, w[q + "mlp.fc2.weight"], w[q + "mlp.fc2.bias"])
        hidden_states.append(x)
    feats = hidden_states[FEATURE_LAYER][:, 1:]  # layer -2, CLS dropped
    h = F.gelu(F.linear(feats, w["multi_modal_projector.linear_1.weight"], w["multi_modal_projector.linear_1.bias"]))
    return F.linear(h, w["multi_modal_projector.linear_2.weight"], w["multi_modal_projector.linear_2.bias"])


def rms(x, weight):
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + T["eps"]))


def rotate_half(x):
    a, b = x.chunk(2, -1)
    return torch.cat([-b, a], -1)


def llama_logits(w, embeds, theta=None, window=0):
    """embeds [S, H] of one unpadded sequence -> logits [S, vocab]. `window` > 0: Mistral's
    sliding window (query i sees key j iff 0 <= i - j < window)."""
    S, H = embeds.shape
    heads, kvh = T["heads"], T["kv_heads"]
    hd = H // heads
    inv_freq = 1.0 / ((theta or T["theta"]) ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.arange(S).float()[:, None] * inv_freq[None]
    emb = torch.cat([ang, ang], -1)
    cos, sin = emb.cos(), emb.sin()
    causal = torch.ones(S, S).tril().bool()
    if window:
        causal &= torch.arange(S)[:, None] - torch.arange(S)[None] < window
    x = embeds
    m = "language_model.model."
    for i in range(T["layers"]):
        q_ = m + f"layers.{i}."
        h = rms(x, w[q_ + "input_layernorm.weight"])
        q = F.linear(h, w[q_ + "self_attn.q_proj.weight"]).view(S, heads, hd).transpose(0, 1)
        k = F.linear(h, w[q_ + "self_attn.k_proj.weight"]).view(S, kvh, hd).transpose(0, 1)
        v = F.linear(h, w[q_ + "self_attn.v_proj.weight"]).view(S, kvh, hd).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kvh, 0)  # kv head j serves query heads j*rep..
        v = v.repeat_interleave(heads // kvh, 0)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(~causal, float("-inf"))
        o = (torch.softmax(s, -1) @ v).transpose(0, 1).reshape(S, heads * hd)
        x = x + F.linear(o, w[q_ + "self_attn.o_proj.weight"])
        h = rms(x, w[q_ + "post_attention_layernorm.weight"])
        x = x + F.linear(F.silu(F.linear(h, w[q_ + "mlp.gate_proj.weight"])) * F.linear(h, w[q_ + "mlp.up_proj.weight"]),
                         w[q_ + "mlp.down_proj.weight"])
    x = rms(x, w[m + "norm.weight"])
    return F.linear(x, w["language_model.lm_head.weight"])


def embed(w, ids, feats):
    ids = torch.tensor(ids)
    e = w["language_model.model.embed_tokens.weight"][ids.clamp(max=T["vocab"] - 1)].clone()
    pos = (ids == IMAGE_TOKEN).nonzero().flatten()
    if len(pos):
        assert len(pos) == N_PATCH
        e[pos] = feats
    return e


def prompt(prefix, suffix):
    return [1] + prefix + [IMAGE_TOKEN] * N_PATCH + suffix


def newer_checkpoint(w):
    """The weights under the newer transformers names, with the dtypes of real hub files
    (embeddings F16, lm_head BF16; the reference uses the rounded values)."""
    def newer(name):
        for a, b in (("vision_tower.", "model.vision_tower."),
                     ("multi_modal_projector.", "model.multi_modal_projector."),
                     ("language_model.model.", "model.language_model."),
                     ("language_model.lm_head.", "lm_head."),
                     ("image_newline", "model.image_newline")):
            if name.startswith(a):
                return b + name[len(a):]
        return name
    ckpt = {newer(k): v for k, v in w.items()}
    ckpt["model.language_model.embed_tokens.weight"] = w["language_model.model.embed_tokens.weight"].half()
    ckpt["lm_head.weight"] = w["language_model.lm_head.weight"].bfloat16()
    return ckpt


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    torch.set_grad_enabled(False)
    g = torch.Generator().manual_seed(1234)
    w = make_weights(g)
    pixels = torch.randn(2, 3, V["image"], V["image"], generator=g)
    feats = vision_features(w, pixels)

    # Two scoring sequences: prompt tokens, image, question, answer (+ EOS 2). Labels on answer.
    seqs = [prompt([5, 7], [11, 12, 13]) + [20, 21, 33, 2],
            prompt([6], [14, 15]) + [40, 41, 2]]
    answer_len = [4, 3]
    golden = {"pixel_values": pixels}
    L = max(len(s) for s in seqs)
    ids = torch.full((2, L), PAD, dtype=torch.int64)
    mask = torch.zeros(2, L, dtype=torch.int64)
    labels = torch.full((2, L), -100, dtype=torch.int64)
    logits_all = torch.zeros(2, L, T["vocab"])
    logp, entropy = torch.zeros(2), torch.zeros(2)
    for b, s in enumerate(seqs):
        n = len(s)
        ids[b, :n] = torch.tensor(s)
        mask[b, :n] = 1
        labels[b, n - answer_len[b]:n] = torch.tensor(s[n - answer_len[b]:])
        lg = llama_logits(w, embed(w, s, feats[b]))
        logits_all[b, :n] = lg
        lp = torch.log_softmax(lg.float(), -1)
        tgt = torch.tensor(s[n - answer_len[b]:])
        pred = lp[n - answer_len[b] - 1:n - 1]
        logp[b] = pred.gather(1, tgt[:, None]).sum()
        entropy[b] = (-(pred.exp() * pred).sum(-1)).mean()
    golden.update(input_ids=ids, attention_mask=mask, labels=labels, logits=logits_all,
                  response_logp=logp, response_entropy=entropy)

    # Greedy generation, no cache, each prompt alone. Prompts of different lengths so that the
    # C++ batch is left-padded.
    gen_prompts = [prompt([5, 7], [11, 12, 13]), prompt([6], [14, 15, 16, 17, 18, 19])]
    max_new = 8
    gen = torch.full((2, max_new), -1, dtype=torch.int64)
    for b, p in enumerate(gen_prompts):
        s = list(p)
        for t in range(max_new):
            nxt = int(llama_logits(w, embed(w, s, feats[b]))[-1].argmax())
            gen[b, t] = nxt
            s.append(nxt)
            if nxt == 2:
                break
    Lp = max(len(p) for p in gen_prompts)
    gp = torch.full((2, Lp), -1, dtype=torch.int64)
    for b, p in enumerate(gen_prompts):
        gp[b, :len(p)] = torch.tensor(p)
    golden.update(gen_prompts=gp, gen_ids=gen)
    safetensors_io.save(os.path.join(out_dir, "golden.safetensors"), golden)

    ckpt = newer_checkpoint(w)
    ckpt["model.vision_tower.vision_model.post_layernorm.weight"] = torch.ones(V["hidden"])
    ckpt["model.vision_tower.vision_model.post_layernorm.bias"] = torch.zeros(V["hidden"])
    ckpt["model.vision_tower.vision_model.embeddings.position_ids"] = torch.arange(N_PATCH + 1)[None]
    safetensors_io.save(os.path.join(out_dir, "model.safetensors"), ckpt, {"format": "pt"})
    config = {
        "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
        "image_token_index": IMAGE_TOKEN, "pad_token_id": PAD, "projector_hidden_act": "gelu",
        "vision_feature_layer": FEATURE_LAYER, "vision_feature_select_strategy": "default",
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": V["hidden"],
                          "intermediate_size": V["inter"], "num_hidden_layers": V["layers"],
                          "num_attention_heads": V["heads"], "image_size": V["image"],
                          "patch_size": V["patch"]},
        "text_config": {"model_type": "llama", "vocab_size": T["vocab"], "hidden_size": T["hidden"],
                        "intermediate_size": T["inter"], "num_hidden_layers": T["layers"],
                        "num_attention_heads": T["heads"], "num_key_value_heads": T["kv_heads"],
                        "rms_norm_eps": T["eps"], "max_position_embeddings": 256},
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    print("wrote", out_dir, "generated:", gen.tolist())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "llava_tiny"))
