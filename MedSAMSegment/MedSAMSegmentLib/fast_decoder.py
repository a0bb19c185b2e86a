"""An inference fast path for SAM's box-prompted mask decoder: same function, less work.

Only imported when torch is. It reads the weights of a loaded `MaskDecoder` and computes what
`mask_decoder(..., multimask_output=False)` returns (within float rounding):
- the dense positional encoding of the 64x64 grid is computed once, not on every prompt;
- in the first two-way block the image side does not depend on the prompt yet, so its three
  4096-token projections (keys and values of token-to-image attention, queries of
  image-to-token attention) are computed once per slice embedding and re-used for every box
  on that slice, and shared by a batch of candidate boxes;
- attention runs as `scaled_dot_product_attention` (no 4096 x 7 score tensors, no copies);
- the upscaling (two 2x2, stride-2 transposed convolutions, a channel norm, GELUs) is per-pixel
  work: it runs as matrix products on the tokens as they are, the mask token's dot product comes
  before the pixels are put in place, so only the final logits are rearranged into the 4x grid;
- only the mask token that single-mask output returns goes through its hypernetwork.
Re-prompting a cached slice is what a user does while adjusting a box, and what propagation
does with several candidate boxes per slice.
"""

import weakref

import torch
from torch.nn import functional as F


def _heads(x, num_heads):
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge(x):
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _attend(attn, q, k, v):
    """An `Attention` module's output from already projected q, k, v (B, N, C_internal)."""
    h = attn.num_heads
    out = F.scaled_dot_product_attention(_heads(q, h), _heads(k, h), _heads(v, h))
    return attn.out_proj(_merge(out))


def _transposed_conv_weights(conv):
    """(C_in, 4 * C_out) matrix and bias of a 2x2, stride-2 ConvTranspose2d, outputs ordered (i, j, c_out)."""
    c_in, c_out = conv.weight.shape[:2]
    matrix = conv.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out).contiguous()
    return matrix, conv.bias.repeat(4)


def _sub_pixels(x, matrix, bias):
    """(..., C_in) -> (..., 4, C_out): the 2x2 outputs of a stride-2 transposed convolution per input pixel."""
    y = F.linear(x, matrix.t(), bias)
    return y.view(*y.shape[:-1], 4, -1)


class FastMaskDecoder:
    """decoder(embedding (C, h, w), sparse prompts (B, n, C)) -> (logits (B, 4h, 4w), iou (B,)).

    The embedding is the cached tensor itself (any dtype or device): its identity keys the memo.
    """

    def __init__(self, network):
        self.net = network
        self.decoder = network.mask_decoder
        self.transformer = self.decoder.transformer
        pe = network.prompt_encoder.get_dense_pe()  # (1, C, h, w), fixed by the weights
        self.pe = pe.flatten(2).transpose(1, 2).contiguous()  # (1, h*w, C)
        self.grid = pe.shape[-2:]
        self._memo = (None, None)  # (weakref to the last embedding, its prompt-free terms)
        up1, norm, act1, up2, act2 = self.decoder.output_upscaling
        self.up1, self.up2 = _transposed_conv_weights(up1), _transposed_conv_weights(up2)
        self.up_norm, self.up_acts = norm, (act1, act2)

    def _image_terms(self, embedding):
        """Prompt-independent tensors of one slice (batch 1), memoised for its last embedding."""
        ref, terms = self._memo
        if ref is not None and ref() is embedding:
            return terms
        no_mask = self.net.prompt_encoder.no_mask_embed.weight  # (1, C): the dense prompt of a box
        image = embedding.to(no_mask.device, torch.float32)
        keys = (image.flatten(1).transpose(0, 1) + no_mask)[None].contiguous()  # (1, h*w, C)
        keyed = keys + self.pe
        first = self.transformer.layers[0]
        terms = {
            "keys": keys,
            "t2i_k": first.cross_attn_token_to_image.k_proj(keyed),
            "t2i_v": first.cross_attn_token_to_image.v_proj(keys),
            "i2t_q": first.cross_attn_image_to_token.q_proj(keyed),
        }
        self._memo = (weakref.ref(embedding), terms)
        return terms

    def _block(self, index, layer, queries, keys, point_pe, terms, batch):
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + point_pe
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)

        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        if index == 0:
            k_img = terms["t2i_k"].expand(batch, -1, -1)
            v_img = terms["t2i_v"].expand(batch, -1, -1)
        else:
            keyed = keys + self.pe
            k_img, v_img = t2i.k_proj(keyed), t2i.v_proj(keys)
        queries = layer.norm2(queries + _attend(t2i, t2i.q_proj(queries + point_pe), k_img, v_img))
        queries = layer.norm3(queries + layer.mlp(queries))

        q_tok = queries + point_pe
        q_img = terms["i2t_q"].expand(batch, -1, -1) if index == 0 else i2t.q_proj(keys + self.pe)
        keys = layer.norm4(keys + _attend(i2t, q_img, i2t.k_proj(q_tok), i2t.v_proj(queries)))
        return queries, keys

    def __call__(self, embedding, sparse):
        dec, tr = self.decoder, self.transformer
        batch = sparse.shape[0]
        terms = self._image_terms(embedding)
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens[None].expand(batch, -1, -1), sparse], dim=1)

        queries, keys = tokens, terms["keys"].expand(batch, -1, -1)
        for index, layer in enumerate(tr.layers):
            queries, keys = self._block(index, layer, queries, keys, tokens, terms, batch)
        final = tr.final_attn_token_to_image
        attn = _attend(final, final.q_proj(queries + tokens), final.k_proj(keys + self.pe), final.v_proj(keys))
        queries = tr.norm_final_attn(queries + attn)

        h, w = self.grid
        x = _sub_pixels(keys, *self.up1)  # (B, h*w, 4, c1): pixel (2y+i, 2x+j) at [y*w+x, 2i+j]
        x = F.layer_norm(x, x.shape[-1:], self.up_norm.weight, self.up_norm.bias, self.up_norm.eps)
        x = self.up_acts[1](_sub_pixels(self.up_acts[0](x), *self.up2))  # (B, h*w, 4, 4, c2)
        hyper = dec.output_hypernetworks_mlps[0](queries[:, 1])  # the single-mask token
        logits = torch.matmul(x.reshape(batch, -1, x.shape[-1]), hyper[:, :, None])
        # [b, y, x, i, j, k, l] is the logit of pixel (4y + 2i + k, 4x + 2j + l)
        logits = logits.view(batch, h, w, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6).reshape(batch, 4 * h, 4 * w)
        iou = dec.iou_prediction_head(queries[:, 0])[:, 0]
        return logits, iou
