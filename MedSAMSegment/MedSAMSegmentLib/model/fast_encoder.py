"""An inference-only copy of a loaded TinyViT: same embedding, less work per slice.

Only imported when torch is. Built from a TinyViT that already holds its weights
(`FastTinyViT(tinyvit)`), it computes the same function in float32 (within float rounding):
- batch norms are folded into the preceding convolutions (no separate pass over the maps);
- on the CPU, matrix products and convolutions run as oneDNN kernels with the bias, GELU and
  residual add fused in (ATen's own GELU costs several times more than the fused one);
- activations stay in (B, H, W, C) order throughout, which is the token layout of the attention
  stages and the channels-last layout of the convolutions: the many NCHW <-> token copies of the
  reference module disappear, 1x1 convolutions become plain matrix products and the depthwise
  convolutions run on a channels-last view;
- the attention biases are gathered once into a (1, heads, N, N) tensor, the 4D shape that lets
  scaled_dot_product_attention take its fused CPU kernel instead of the composite fall-back;
- window padding keeps the reference's numbers without wasting work: a padded token of the
  reference is LayerNorm(0) = the norm's bias, so its q/k/v is one constant vector, computed once,
  instead of running the qkv projection over the padding; outputs of padded positions are dropped.

precision="bfloat16" / "float16" run matrix products and convolutions in that type (AVX-512 BF16
on recent x86 CPUs, tensor cores on GPUs); layer norms and the residual stream of the attention
stages stay in float32. Measured on real slices (benchmarks/benchmark.py): bfloat16 moves the
embedding by about 4 % (its 8-bit mantissa) and changes propagated masks visibly, float16 by
about 0.5 %; float32 stays the CPU default.
"""

import torch
from torch import nn
from torch.nn import functional as F

PRECISIONS = ("float32", "bfloat16", "float16")


def _folded_conv(conv_bn):
    """(weight, bias) of a ConvBN with its batch norm folded in (eval statistics)."""
    conv, bn = conv_bn.c, conv_bn.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale[:, None, None, None]
    bias = bn.bias - bn.running_mean * scale
    return weight.detach(), bias.detach()


def _frozen(tensor, dtype, memory_format=torch.contiguous_format):
    """A private copy: the reference module is never modified."""
    return nn.Parameter(tensor.detach().to(dtype).clone(memory_format=memory_format), requires_grad=False)


def _onednn_ops():
    """oneDNN's fused CPU kernels (matrix product or convolution + bias + GELU / residual add).

    They are what torch.compile's CPU back end emits; called directly they give the fusion
    without the compile time. Private to PyTorch, so their absence only means the unfused path.
    """
    mkldnn = getattr(torch.ops, "mkldnn", None)
    try:
        ops = mkldnn._linear_pointwise, mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):
        return None
    return ops if torch.backends.mkldnn.is_available() else None


def _onednn_bf16():
    """True where the CPU has native bfloat16 dot products (else oneDNN would emulate them)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


_ONEDNN = _onednn_ops()
_ONEDNN_BF16 = _ONEDNN is not None and _onednn_bf16()


def _fused(x):
    if _ONEDNN is None or x.device.type != "cpu":
        return False
    return x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and _ONEDNN_BF16)


class _Linear(nn.Module):
    """act(x W^T + b [+ add]) over the last axis, weights held in the compute dtype."""

    def __init__(self, weight, bias, dtype):
        super().__init__()
        self.weight = _frozen(weight, dtype)
        self.bias = None if bias is None else _frozen(bias, dtype)

    @classmethod
    def of(cls, layer, dtype):
        return cls(layer.weight, layer.bias, dtype)

    @classmethod
    def pointwise(cls, conv_bn, dtype):
        """1x1 convolution + folded batch norm as a matrix product over the channel axis."""
        weight, bias = _folded_conv(conv_bn)
        return cls(weight[:, :, 0, 0], bias, dtype)

    def forward(self, x, gelu=False, add=None):
        shape = x.shape[:-1] + (self.weight.shape[0],)
        if _fused(x):
            flat = x.reshape(-1, x.shape[-1])
            if add is not None and add.dtype == x.dtype:
                y = _ONEDNN[0].binary(flat, add.reshape(flat.shape[0], -1), self.weight, self.bias, "add")
                return (F.gelu(y) if gelu else y).view(shape)
            y = _ONEDNN[0](flat, self.weight, self.bias, "gelu" if gelu and add is None else "none", [], "none").view(shape)
        else:
            y = F.linear(x, self.weight, self.bias)
            if gelu and add is None:
                y = F.gelu(y)
        if add is not None:
            y = add + y  # float32 residual stream + a bfloat16 product: float32
            return F.gelu(y) if gelu else y
        return y


class _ChannelsLastConv(nn.Module):
    """kxk convolution (+ folded batch norm, + GELU) of a (B, H, W, C) map via a channels-last view."""

    def __init__(self, conv, weight, bias, dtype):
        super().__init__()
        self.weight = _frozen(weight, dtype, torch.channels_last)
        self.bias = None if bias is None else _frozen(bias, dtype)
        self.stride, self.padding, self.groups = list(conv.stride), list(conv.padding), conv.groups

    @classmethod
    def of(cls, conv_bn, dtype):
        weight, bias = _folded_conv(conv_bn)
        return cls(conv_bn.c, weight, bias, dtype)

    def forward(self, x, gelu=False):
        nchw = x.permute(0, 3, 1, 2)  # a channels-last NCHW view: no copy
        if _fused(x):
            y = _ONEDNN[1](nchw, self.weight, self.bias, self.padding, self.stride, [1, 1], self.groups,
                           "gelu" if gelu else "none", [], "none")
        else:
            y = F.conv2d(nchw, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
            y = F.gelu(y) if gelu else y
        return y.permute(0, 2, 3, 1).contiguous()  # a no-op when the convolution kept channels-last


class _LayerNorm(nn.Module):
    """LayerNorm over the last axis, always computed in float32."""

    def __init__(self, norm):
        super().__init__()
        self.weight = _frozen(norm.weight, torch.float32)
        self.bias = _frozen(norm.bias, torch.float32)
        self.eps = norm.eps

    def forward(self, x):
        return F.layer_norm(x.float(), (x.shape[-1],), self.weight, self.bias, self.eps)


class _FastConvChain(nn.Module):
    """1x1 conv, GELU, 3x3 (depthwise) conv, GELU, 1x1 conv: TinyViT's MBConv (residual: GELU
    after the add) and its patch merging (no residual, no final GELU; a strided 3x3)."""

    def __init__(self, module, dtype, residual):
        super().__init__()
        self.conv1 = _Linear.pointwise(module.conv1, dtype)
        self.conv2 = _ChannelsLastConv.of(module.conv2, dtype)
        self.conv3 = _Linear.pointwise(module.conv3, dtype)
        self.residual = residual

    def forward(self, x):
        y = self.conv2(self.conv1(x, gelu=True), gelu=True)
        return self.conv3(y, gelu=True, add=x) if self.residual else self.conv3(y)


class _FastTinyViTBlock(nn.Module):
    """Residual stream in float32; matrix products in the compute dtype."""

    def __init__(self, block, dtype):
        super().__init__()
        attn = block.attn
        self.dtype = dtype
        self.window = block.window
        self.heads, self.head_dim = attn.num_heads, attn.head_dim
        self.norm1 = _LayerNorm(attn.norm)
        self.qkv, self.proj = _Linear.of(attn.qkv, dtype), _Linear.of(attn.proj, dtype)
        bias = attn.attention_biases.detach()[:, attn.bias_idx]
        self.register_buffer("attn_bias", bias[None].to(dtype).contiguous(), persistent=False)
        # The reference pads with zeros before its LayerNorm; LayerNorm(0) is the norm's bias, so
        # every padded token has this one q/k/v.
        pad = F.linear(attn.norm.bias.detach().float(), attn.qkv.weight.detach().float(), attn.qkv.bias.detach().float())
        self.register_buffer("qkv_of_padding", pad.to(dtype), persistent=False)
        self.local_conv = _ChannelsLastConv.of(block.local_conv, dtype)
        self.norm2 = _LayerNorm(block.mlp.norm)
        self.fc1, self.fc2 = _Linear.of(block.mlp.fc1, dtype), _Linear.of(block.mlp.fc2, dtype)

    def _attention(self, x):
        b, h, w, c = x.shape
        ws, heads, hd = self.window, self.heads, self.head_dim
        qkv = self.qkv(self.norm1(x).to(self.dtype))
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        if pad_b or pad_r:
            padded = self.qkv_of_padding.expand(b, h + pad_b, w + pad_r, 3 * c).clone()
            padded[:, :h, :w] = qkv
            qkv = padded
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        # (B, nh, ws, nw, ws, heads, 3*hd) -> (B*nh*nw, heads, ws*ws, 3*hd): one copy
        qkv = qkv.view(b, nh, ws, nw, ws, heads, 3 * hd).permute(0, 1, 3, 5, 2, 4, 6)
        q, k, v = qkv.reshape(b * nh * nw, heads, ws * ws, 3 * hd).split(hd, dim=3)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.attn_bias)
        out = self.proj(out.transpose(1, 2).reshape(b * nh * nw, ws * ws, c))
        out = out.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        return out[:, :h, :w]

    def forward(self, x):
        x = x + self._attention(x)
        x = self.local_conv(x.to(self.dtype)).float()
        return self.fc2(self.fc1(self.norm2(x).to(self.dtype), gelu=True), add=x)


def _long_lived_like(x):
    """An empty tensor for an embedding that the cache will keep, outside the malloc heap on the CPU.

    Cached embeddings (4 MB each) live for minutes while the encoder frees tens of megabytes of
    activations around them every slice; in glibc's heap the two interleave and the freed holes
    are never returned, which made a 300-slice propagation hold ~0.6 GB more than its data. An
    anonymous mapping of its own is returned to the system as soon as the embedding is dropped.
    """
    if x.device.type != "cpu":
        return torch.empty(x.shape, dtype=torch.float32, device=x.device)
    import mmap

    import numpy as np

    count = x.numel()
    buffer = mmap.mmap(-1, max(1, count * 4))
    return torch.from_numpy(np.frombuffer(buffer, dtype=np.float32, count=count).reshape(tuple(x.shape)))


class FastTinyViT(nn.Module):
    """(B, 3, 256, 256) in [0, 1] -> (B, 256, 64, 64) float32, the function of `tinyvit`."""

    def __init__(self, tinyvit, precision="float32"):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        self.precision = precision
        dtype = self.dtype = getattr(torch, precision)
        embed = tinyvit.patch_embed.seq
        self.embed1, self.embed2 = _Linear.pointwise(embed[0], dtype), _Linear.pointwise(embed[2], dtype)
        self.conv_blocks = nn.ModuleList(_FastConvChain(b, dtype, residual=True) for b in tinyvit.layers[0].blocks)
        self.stages = nn.ModuleList(
            nn.ModuleList(_FastTinyViTBlock(b, dtype) for b in layer.blocks) for layer in tinyvit.layers[1:]
        )
        self.merges = nn.ModuleList(
            nn.Identity() if layer.downsample is None else _FastConvChain(layer.downsample, dtype, residual=False)
            for layer in tinyvit.layers
        )
        neck = tinyvit.neck
        self.neck1 = _Linear(neck[0].weight.detach()[:, :, 0, 0], None, dtype)
        self.neck_norm1 = _LayerNorm(neck[1])
        self.neck2 = _ChannelsLastConv(neck[2], neck[2].weight, None, dtype)
        self.neck_norm2 = _LayerNorm(neck[3])
        self.eval()

    def steps(self):
        """The forward pass as (name, function) steps, each taking the previous one's output:
        the patch embedding, every block and patch merging, the neck. forward() runs them in a
        row, so running them one at a time (with anything in between) gives the same numbers."""
        dtype = self.dtype
        out = [("patch embedding", self._embed)]
        out += [(f"layer 0 block {i}", block) for i, block in enumerate(self.conv_blocks)]
        out.append(("layer 0 merge", lambda x: self.merges[0](x).float()))
        for n, (blocks, merge) in enumerate(zip(self.stages, self.merges[1:]), start=1):
            out += [(f"layer {n} block {i}", block) for i, block in enumerate(blocks)]
            out.append((f"layer {n} merge", lambda x, merge=merge: merge(x.to(dtype)).float()))
        out.append(("neck", self._neck))
        return out

    def _embed(self, images):
        x = images.to(self.dtype).permute(0, 2, 3, 1)  # (B, H, W, 3)
        return self.embed2(self.embed1(x, gelu=True))

    def _neck(self, x):
        x = self.neck_norm1(self.neck1(x.to(self.dtype)))
        x = self.neck_norm2(self.neck2(x.to(self.dtype))).permute(0, 3, 1, 2)
        return _long_lived_like(x).copy_(x)

    def forward(self, images):
        return run_steps(self.steps(), images)


def run_steps(steps, images):
    x = images
    for _name, step in steps:
        x = step(x)
    return x


def _reference_tinyvit_steps(encoder):
    """TinyViT.forward of tinyvit.py, one block (or patch merging) per step."""
    out = [("patch embedding", encoder.patch_embed)]
    for n, layer in enumerate(encoder.layers):
        out += [(f"layer {n} block {i}", block) for i, block in enumerate(layer.blocks)]
        if layer.downsample is not None:
            out.append((f"layer {n} merge", layer.downsample))

    def neck(x):
        b, _, c = x.shape
        return encoder.neck(x.view(b, encoder.out_size, encoder.out_size, c).permute(0, 3, 1, 2))

    return out + [("neck", neck)]


def _vit_steps(encoder):
    """segment_anything's ImageEncoderViT.forward (MedSAM ViT-B), one transformer block per step."""

    def embed(images):
        x = encoder.patch_embed(images)
        return x if encoder.pos_embed is None else x + encoder.pos_embed

    out = [("patch embedding", embed)]
    out += [(f"block {i}", block) for i, block in enumerate(encoder.blocks)]
    return out + [("neck", lambda x: encoder.neck(x.permute(0, 3, 1, 2)))]


def encoder_steps(encoder):
    """`encoder` (what make_encoder returned) as a list of (name, function) steps whose composition
    is its forward pass. A background encode runs them one at a time and hands the model over to a
    waiting foreground call between two steps (pre_encoder.py). An encoder of unknown structure
    is one step."""
    from .tinyvit import TinyViT

    if hasattr(encoder, "steps"):
        return encoder.steps()
    if isinstance(encoder, TinyViT):
        return _reference_tinyvit_steps(encoder)
    if all(hasattr(encoder, name) for name in ("patch_embed", "pos_embed", "blocks", "neck")):
        return _vit_steps(encoder)
    return [("encode", encoder)]


class _Autocast:
    """The reference module under autocast to a lower precision (forward and each step)."""

    def __init__(self, module, device_type, dtype):
        self.module, self.device_type, self.dtype = module, device_type, dtype

    def __call__(self, images):
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.module(images)

    def steps(self):
        def under_autocast(step):
            def run(x):
                with torch.autocast(self.device_type, dtype=self.dtype):
                    return step(x)

            return run

        return [(name, under_autocast(step)) for name, step in encoder_steps(self.module)]


def make_encoder(image_encoder, device, dtype, optimise=True):
    """The function the predictor encodes with: (B, 3, S, S) float32 images -> embeddings.

    TinyViT on the CPU or CUDA gets the FastTinyViT copy in `dtype` (float32 on the CPU by default:
    the same masks as the reference); anything else (MedSAM ViT-B, Apple MPS, optimise=False)
    runs the reference module, under autocast when `dtype` is not float32.
    """
    from .tinyvit import TinyViT

    if optimise and isinstance(image_encoder, TinyViT) and device.type in ("cpu", "cuda"):
        return FastTinyViT(image_encoder, str(dtype).replace("torch.", "")).to(device)
    if optimise and device.type == "cuda":  # MedSAM ViT-B: fused attention (fast_vit_b.py)
        from .fast_vit_b import fused_vit_or_none

        fused = fused_vit_or_none(image_encoder, dtype)
        if fused is not None:
            return fused
    if dtype == torch.float32:
        return image_encoder
    return _Autocast(image_encoder, device.type, dtype)


def physical_cores():
    """CPU cores this process may use, counting each physical core once (None if unknown)."""
    import os

    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:
        return os.cpu_count()
    cores = set()
    for cpu in allowed:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())
        except OSError:
            return len(allowed)
    return len(cores) or None


def tune_threads():
    """Use one intra-op thread per physical core: hyper-threads only contend for the same
    vector units in these matrix products. Never raises the count a user has lowered."""
    cores = physical_cores()
    if cores and torch.get_num_threads() > cores:
        torch.set_num_threads(cores)
    return torch.get_num_threads()
