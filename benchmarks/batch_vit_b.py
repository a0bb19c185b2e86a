"""Which MedSAM ViT-B encoder variant may be a default: embedding differences from the float32
reference, with random weights (the real medsam_vit_b.pth is not obtainable here), and CPU times.

The rule: a variant may be the default only if its embedding differs from the float32 reference
no more than today's default, the reference in float16 (CUDA), does. Relative positions are
randomised (SAM initialises them to zero, which would hide the attention mask).

    python benchmarks/batch_vit_b.py [--size 512] [--depth 12] [--width 768] [--heads 12] [--seed 0]

Prints a Markdown table; ViT-B proper is --size 1024 (about 4x the time of 512).
"""

import argparse
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MedSAMSegment"))


def main(argv=None):
    import torch

    from MedSAMSegmentLib.model.fast_vit_b import FastViTB
    from MedSAMSegmentLib.model.sam_modules import sam_modeling

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    encoder = sam_modeling().ImageEncoderViT(
        img_size=args.size, depth=args.depth, embed_dim=args.width, num_heads=args.heads, mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), patch_size=16, qkv_bias=True, use_rel_pos=True,
        global_attn_indexes=tuple(range(args.depth))[2::3], window_size=14, out_chans=256,
    ).eval()
    with torch.no_grad():
        for block in encoder.blocks:
            block.attn.rel_pos_h.normal_(0, 0.5)
            block.attn.rel_pos_w.normal_(0, 0.5)
    images = torch.rand(1, 3, args.size, args.size)

    def reference_in(dtype):
        def run(x):
            with torch.autocast("cpu", dtype=dtype):
                return encoder(x)
        return run

    variants = [("reference float32", encoder), ("reference float16 (today's CUDA default)", reference_in(torch.float16)),
                ("reference bfloat16", reference_in(torch.bfloat16)), ("fused float32", FastViTB(encoder, "float32")),
                ("fused float16 (new CUDA default)", FastViTB(encoder, "float16")),
                ("fused bfloat16", FastViTB(encoder, "bfloat16"))]
    rows = {}
    with torch.inference_mode():
        for name, run in variants:
            started = time.perf_counter()
            out = run(images).float()
            rows[name] = (out, time.perf_counter() - started)
            print(f"  {name}: {rows[name][1]:.1f} s", file=sys.stderr, flush=True)
    reference = rows["reference float32"][0]
    today = float((rows["reference float16 (today's CUDA default)"][0] - reference).norm() / reference.norm())
    print(f"### ViT encoder, random weights: {args.size} px, depth {args.depth}, width {args.width}, "
          f"{args.heads} heads, seed {args.seed}, torch {torch.__version__}, CPU {args.threads} thread(s)\n")
    print("| variant | relative difference from float32 reference | may be a default | wall s (CPU, 1 thread) |")
    print("|---|---:|---|---:|")
    for name, (out, seconds) in rows.items():
        diff = float((out - reference).norm() / reference.norm())
        print(f"| {name} | {diff:.4e} | {'yes' if diff <= today else 'no'} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
