"""MedSAM's SAM ViT-B image encoder with fused attention, for GPU cohorts.

The reference attention builds the (heads, N, N) score matrix, adds the decomposed relative-
position terms, then softmax and a second product: three passes over N x N (N = 4,096 tokens in
the four global blocks). Here the two relative-position terms are summed once into an additive
mask and `torch.nn.functional.scaled_dot_product_attention` does the rest in one fused kernel
(same maths: softmax(q k^T / sqrt(d) + rel_h + rel_w) v). Everything else is the reference
module's own layers and weights, shared, not copied.

precision: "float32", "float16" or "bfloat16" (autocast, as the reference path runs). It becomes the
CUDA path of ViT-B (fast_encoder.make_encoder) in the precision the device policy picks (float16).
The rule for that: a default's embedding may differ from the float32 reference no more than
today's default (the reference in float16) does. Measured with random weights at ViT-B's full
width and depth (benchmarks/results/batch_vit_b_precision.md): float32 fused 8e-7 relative, float16
fused 1.0020e-3 vs the reference float16's 1.0122e-3 (fused attention adds no error of its own),
bfloat16 8.4e-3 (fails the rule: opt-in only).

torch.compile of the result is opt-in (`compile_encoder`): it pays on a cohort (tens of seconds
once, then faster on every slice), never on a short interactive run.
"""

import contextlib

import torch
from torch.nn import functional as F

PRECISIONS = ("float32", "float16", "bfloat16")


def _sam_helpers():
    from .sam_modules import sam_modeling

    module = sam_modeling().image_encoder
    return module.window_partition, module.window_unpartition, module.get_rel_pos


def _attention(attn, x, get_rel_pos):
    """The reference Attention.forward, with the score / bias / softmax / product fused."""
    b, h, w, _ = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, heads, N, head_dim)
    mask = None
    if attn.use_rel_pos:
        r_q = q.reshape(b * heads, h, w, q.shape[-1])
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(h, h, attn.rel_pos_h).to(r_q.dtype))
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(w, w, attn.rel_pos_w).to(r_q.dtype))
        mask = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(b, heads, h * w, h * w)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class FastViTB(torch.nn.Module):
    """(B, 3, S, S) -> (B, 256, S/16, S/16), the function of a SAM ImageEncoderViT."""

    def __init__(self, encoder, precision="float32"):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        self.encoder, self.precision = encoder, precision
        self.dtype = getattr(torch, precision)
        self._partition, self._unpartition, self._rel_pos = _sam_helpers()

    def _block(self, block, x):
        shortcut, x = x, block.norm1(x)
        if block.window_size > 0:
            size = x.shape[1], x.shape[2]
            x, pad = self._partition(x, block.window_size)
        x = _attention(block.attn, x, self._rel_pos)
        if block.window_size > 0:
            x = self._unpartition(x, block.window_size, pad, size)
        x = shortcut + x
        return x + block.mlp(block.norm2(x))

    def forward(self, images):
        enc = self.encoder
        cast = (torch.autocast(images.device.type, dtype=self.dtype) if self.dtype != torch.float32
                else contextlib.nullcontext())
        with cast:
            x = enc.patch_embed(images)
            if enc.pos_embed is not None:
                x = x + enc.pos_embed
            for block in enc.blocks:
                x = self._block(block, x)
            return enc.neck(x.permute(0, 3, 1, 2))


def fused_vit_or_none(encoder, dtype):
    """FastViTB for a SAM ViT encoder (any of PRECISIONS), None for anything else."""
    precision = str(dtype).replace("torch.", "")
    is_vit = all(hasattr(encoder, name) for name in ("blocks", "neck", "patch_embed", "pos_embed"))
    return FastViTB(encoder, precision) if is_vit and precision in PRECISIONS else None


def compile_encoder(encode):
    """torch.compile'd encoder (opt-in for cohorts: the first batches pay the compile time)."""
    return torch.compile(encode, dynamic=False)
