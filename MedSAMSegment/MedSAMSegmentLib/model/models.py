"""Build a network for a registry entry and load its checkpoint (weights_only, strict)."""

from functools import partial

from .device import import_torch
from .registry import get_spec


def _sam_network_class():
    torch = import_torch()

    class SamNetwork(torch.nn.Module):
        """Image encoder + SAM prompt encoder + SAM mask decoder (the checkpoint's three prefixes)."""

        def __init__(self, image_encoder, prompt_encoder, mask_decoder):
            super().__init__()
            self.image_encoder = image_encoder
            self.prompt_encoder = prompt_encoder
            self.mask_decoder = mask_decoder

    return SamNetwork


def _image_encoder(spec):
    torch = import_torch()
    if spec.architecture == "tinyvit-sam":
        from .tinyvit import TinyViT

        return TinyViT(img_size=spec.image_size, **spec.encoder)
    from .sam_modules import sam_modeling

    enc = dict(spec.encoder)
    return sam_modeling().ImageEncoderViT(
        depth=enc["depth"],
        embed_dim=enc["embed_dim"],
        img_size=spec.image_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=enc["num_heads"],
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=tuple(enc["global_attn_indexes"]),
        window_size=14,
        out_chans=256,
    )


def build_network(model=None):
    """Untrained network of the registry entry `model` (name or ModelSpec)."""
    from .sam_modules import sam_modeling

    spec = get_spec(model)
    sam = sam_modeling()
    # ViT: 16-pixel patches; TinyViT: two stride-2 stages (256 -> 64)
    embedding = spec.image_size // (16 if spec.architecture == "sam-vit" else 4)
    prompt_encoder = sam.PromptEncoder(
        embed_dim=256,
        image_embedding_size=(embedding, embedding),
        input_image_size=(spec.image_size, spec.image_size),
        mask_in_chans=16,
    )
    mask_decoder = sam.MaskDecoder(
        num_multimask_outputs=3,
        transformer=sam.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return _sam_network_class()(_image_encoder(spec), prompt_encoder, mask_decoder)


def load_network(model=None, checkpoint=None, device="cpu", **resolve_options):
    """Network with its weights, in eval mode, on `device`. Returns (network, checkpoint path)."""
    from . import weights

    spec = get_spec(model)
    path = weights.resolve_checkpoint(spec.name, checkpoint=checkpoint, **resolve_options)
    state = weights.load_state_dict(path)
    network = build_network(spec)
    weights.load_into(network, state, path, spec.title)
    return network.eval().to(device), path
