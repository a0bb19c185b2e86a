"""An inference fast path for SAM's box-prompted mask decoder: same function, less work.

Only imported when torch is. It reads the weights of a loaded `MaskDecoder` and computes what
`mask_decoder(..., multimask_output=False)` returns (within float rounding):
- the dense positional encoding of the 64x64 grid is computed once, not on every prompt;
- in the first two-way block the image side does not depend on the prompt yet, so its three
  4096-token projections (keys and values of token-to-image attention, queries of
  image-to-token attention) are computed once per slice embedding and re-used for every box
  on that slice, and shared by a batch of candidate boxes. Each is one matrix product straight
  from the cached embedding: the positional encoding and the box's dense prompt (a constant
  vector) are the same for every slice, so their projections are computed once per network and
  enter the product as its added term;
- the image tokens' residual connections run inside the matrix product that computes the
  attention output (its added term), and that output's bias (plus, in the first block, the dense
  prompt) is folded into the token values: each head's weights add up to one. On the CPU the
  4096 x 256 passes that adds and copies make cost as much as the products themselves;
- attention runs as `scaled_dot_product_attention` (no 4096 x 7 score tensors, no copies); the
  image tokens' attention over the 7 prompt tokens keeps the image tokens on the last axis, so
  its softmax steps run along them (vectorised) and its scale is applied to the 7 token keys;
- on the CPU several prompts run one after the other, not as a batch (see prompted());
- after the first block, attention between the 7 prompt tokens and the 4096 image tokens never
  projects the image side: projections are linear, so the tokens' side absorbs them instead
  (query . W_k x = (W_k^T query) . x; the value projection moves past the softmax-weighted sum,
  whose weights add up to one; the image-to-token output projection folds into the 7 token values).
  That is 7-row work instead of 4096-row work and cuts the decoder's multiply-adds by about 40 %;
- the upscaling (two 2x2, stride-2 transposed convolutions, a channel norm, GELUs) is per-pixel
  work: it runs as matrix products on the tokens as they are, the mask token's dot product comes
  before the pixels are put in place, so only the final logits are rearranged into the 4x grid;
- only the mask token that single-mask output returns goes through its hypernetwork, and the final
  token-to-image attention runs for it and the IoU token only (its queries never mix).
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


def _head_weights(linear, num_heads):
    """(H, d, C) view of a projection C -> H * d (SAM splits its outputs into contiguous heads)."""
    return linear.weight.view(num_heads, linear.weight.shape[0] // num_heads, -1)


def _tokens_to_image(attn, tokens, keyed, values):
    """attn(q=tokens, k=keyed, v=values) for a few tokens (B, T, C) against image tokens (B, N, C),
    without projecting the N image tokens. The key bias adds the same score to every image token of
    a row, so the softmax drops it."""
    b, t, _ = tokens.shape
    h = attn.num_heads
    q = _heads(attn.q_proj(tokens), h)  # (B, H, T, d)
    d = q.shape[-1]
    queries = torch.matmul(q.mul_(d**-0.5), _head_weights(attn.k_proj, h)).reshape(b, h * t, -1)  # (B, H*T, C)
    weights = torch.matmul(queries, keyed.transpose(1, 2)).softmax(-1)  # (B, H*T, N)
    mixed = torch.matmul(weights, values).view(b, h, t, -1)  # (B, H, T, C)
    out = torch.matmul(mixed, _head_weights(attn.v_proj, h).transpose(1, 2)) + attn.v_proj.bias.view(h, 1, d)
    return attn.out_proj(_merge(out))


def _image_to_tokens_added(attn, residual, scores, token_values, constant, in_place):
    """residual + constant + attn's output for image tokens (B, N, C), from their scaled scores
    against each head's token keys (B, H, T, N), with the value and output projections folded
    into the T token values. Each head's softmax weights add up to one, so a vector added to every
    token value divided by the H heads adds it to every output row: the output bias and `constant`
    go there, and the residual is the product's added term (one pass over the image tokens, not three).
    in_place overwrites the residual: torch still stages the product, but 0.7 ms against 0.9 for a
    new tensor of 4096 x 256 on this 2-core CPU."""
    b, h, t, n = scores.shape
    weights = _softmax_tokens(scores).view(b, h * t, n)
    v = _heads(attn.v_proj(token_values), h)  # (B, H, T, d)
    d = v.shape[-1]
    w_out = attn.out_proj.weight.view(-1, h, d).permute(1, 2, 0)  # (H, d, C)
    shift = (attn.out_proj.bias if constant is None else attn.out_proj.bias + constant) / h
    folded = torch.matmul(v, w_out).add_(shift).reshape(b, h * t, -1)  # (B, H*T, C)
    if in_place:
        return residual.baddbmm_(weights.transpose(1, 2), folded)
    return torch.baddbmm(residual, weights.transpose(1, 2), folded)


def _softmax_tokens(x):
    """softmax over the few tokens of (B, H, T, N) scores, in place. With the image tokens last, each
    step runs along them (vectorised); over a last axis of 7, torch's softmax kernel is slow (6.7 ms
    for 4096 x 8 x 7 on one core)."""
    x = x.sub_(x.amax(2, keepdim=True)).exp_()
    return x.div_(x.sum(2, keepdim=True))


def _image_scores(attn, keyed, token_keys):
    """Scores (B, H, T, N) of image tokens keyed (B, N, C) against token keys (B, H, T, d, already
    scaled), without projecting the image tokens: q_proj's weights move onto the token keys."""
    b, h, t, _ = token_keys.shape
    w_q = _head_weights(attn.q_proj, h)  # (H, d, C)
    keys = torch.matmul(token_keys, w_q).reshape(b, h * t, -1)  # (B, H*T, C)
    bias = (token_keys * attn.q_proj.bias.view(h, 1, -1)).sum(-1).reshape(b, h * t, 1)
    return torch.baddbmm(bias, keys, keyed.transpose(1, 2)).view(b, h, t, -1)


def _transposed_conv_weights(conv):
    """(C_in, 4 * C_out) matrix and bias of a 2x2, stride-2 ConvTranspose2d, outputs ordered (i, j, c_out)."""
    c_in, c_out = conv.weight.shape[:2]
    matrix = conv.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out).contiguous()
    return matrix, conv.bias.repeat(4)


def _sub_pixels(x, matrix, bias):
    """(..., C_in) -> (..., 4, C_out): the 2x2 outputs of a stride-2 transposed convolution per input pixel."""
    y = F.linear(x, matrix.t(), bias)
    return y.view(*y.shape[:-1], 4, -1)


UPSCALE_CHUNK = 1024  # image tokens per step of the upscaling (2 MB of intermediate per step)


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
        # A box prompt's dense prompt is one learnt vector on every image token.
        self.no_mask = network.prompt_encoder.no_mask_embed.weight[0]  # (C,)
        first = self.transformer.layers[0]
        t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        # The first block's three image projections as one product (one pass over the embedding):
        # keys and values of token-to-image attention, queries of image-to-token attention, side by
        # side; their slice-independent part (the projected positional encoding and dense prompt,
        # and the biases) is the product's added term.
        projections = (t2i.k_proj, t2i.v_proj, i2t.q_proj)
        with torch.no_grad():
            keyed = self.pe[0] + self.no_mask
            fixed = (t2i.k_proj(keyed), t2i.v_proj(self.no_mask).expand_as(keyed[:, : t2i.internal_dim]),
                     i2t.q_proj(keyed))
            self.first_weight = torch.cat([linear.weight for linear in projections]).t().contiguous()  # (C, 3 C')
            self.first_fixed = torch.cat(fixed, dim=1).contiguous()  # (h*w, 3 C')
        self.first_split = [linear.out_features for linear in projections]
        self._memo = (None, None)  # (weakref to the last embedding, its prompt-free terms)
        self.one_at_a_time = self.pe.device.type == "cpu"  # see prompted()
        up1, norm, act1, up2, act2 = self.decoder.output_upscaling
        self.up1, self.up2 = _transposed_conv_weights(up1), _transposed_conv_weights(up2)
        self.up_norm, self.up_acts = norm, (act1, act2)

    def _image_terms(self, embedding):
        """Prompt-independent tensors of one slice (batch 1), memoised for its last embedding."""
        ref, terms = self._memo
        if ref is not None and ref() is embedding:
            return terms
        image = embedding.to(self.no_mask.device, torch.float32).flatten(1).t()  # (h*w, C), a view
        # linear(image + dense prompt (+ pe)) = image @ W^T + linear(dense prompt (+ pe))
        projected = torch.addmm(self.first_fixed, image, self.first_weight)[None]
        terms = dict(zip(("t2i_k", "t2i_v", "i2t_q"), projected.split(self.first_split, dim=-1)))
        terms["image"] = image[None]  # the first block's residual (plus the dense prompt, _block)
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
        if index == 0:  # the image side is the slice's own, projected once (_image_terms)
            k_img = terms["t2i_k"].expand(batch, -1, -1)
            v_img = terms["t2i_v"].expand(batch, -1, -1)
            queries = layer.norm2(queries + _attend(t2i, t2i.q_proj(queries + point_pe), k_img, v_img))
        else:
            keyed = keys + self.pe
            queries = layer.norm2(queries + _tokens_to_image(t2i, queries + point_pe, keyed, keys))
        queries = layer.norm3(queries + layer.mlp(queries))

        token_keys = _heads(i2t.k_proj(queries + point_pe), i2t.num_heads)  # (B, H, T, d)
        token_keys = token_keys.mul_(token_keys.shape[-1] ** -0.5)  # the attention's scale, on 7 rows
        if index == 0:
            q_img = _heads(terms["i2t_q"], i2t.num_heads)  # (1, H, N, d)
            scores = torch.matmul(token_keys, q_img.transpose(-1, -2))  # (B, H, T, N)
            # the image tokens: the cached embedding (read, never written) plus the dense prompt
            added = _image_to_tokens_added(i2t, terms["image"], scores, queries, self.no_mask, in_place=False)
        else:
            scores = _image_scores(i2t, keyed, token_keys)
            added = _image_to_tokens_added(i2t, keys, scores, queries, None, in_place=True)  # keys: this call's own
        return queries, layer.norm4(added)

    def _upscaled_logits(self, keys, hyper, rows, cols):
        """(B, rows*cols, 16) mask logits of the top-left rows x cols image tokens: keys (B of (h*w, C))
        through the upscaling, dotted with the mask token's hypernetwork output hyper (B, c2). Pixel
        (2y+i, 2x+j) of the first upscaling is [y*w+x, 2i+j]; the second splits each again. Runs over
        chunks of tokens so that the 16x larger intermediate stays in the CPU's cache (in one piece,
        three candidate boxes make 25 MB)."""
        h, w = self.grid
        out = keys[0].new_empty(len(keys), rows * cols, 16)
        norm = self.up_norm
        step = max(1, UPSCALE_CHUNK // cols)  # token rows per chunk
        for b, tokens in enumerate(keys):
            grid = tokens.view(h, w, -1)
            for top in range(0, rows, step):
                x = grid[top : min(top + step, rows), :cols].reshape(-1, grid.shape[-1])
                x = _sub_pixels(x, *self.up1)  # (n, 4, c1)
                x = F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps)
                x = self.up_acts[1](_sub_pixels(self.up_acts[0](x), *self.up2))  # (n, 4, 4, c2)
                out[b, top * cols : (top + step) * cols] = torch.matmul(x, hyper[b]).view(-1, 16)
        return out

    def prompted(self, embedding, sparse):
        """((keys, hyper), iou (B,)): the two-way transformer for B prompts, everything but the
        upscaling. The IoU estimates are final here; logits(state, b) upscales one prompt's mask, so
        a caller that keeps one of several candidates pays the upscaling (a third of a decode) once.
        On the CPU the prompts run one at a time: a batch's 4096 x 256 x B intermediates outgrow the
        cache, and three boxes in one batch took 75 ms where three single ones took 57."""
        if self.one_at_a_time and sparse.shape[0] > 1:
            states, ious = zip(*(self._prompted(embedding, sparse[n : n + 1]) for n in range(sparse.shape[0])))
            return (sum((k for k, _ in states), ()), torch.cat([h for _, h in states])), torch.cat(ious)
        return self._prompted(embedding, sparse)

    def _prompted(self, embedding, sparse):
        dec, tr = self.decoder, self.transformer
        batch = sparse.shape[0]
        terms = self._image_terms(embedding)
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens[None].expand(batch, -1, -1), sparse], dim=1)

        queries, keys = tokens, None  # the first block reads the image side from terms
        for index, layer in enumerate(tr.layers):
            queries, keys = self._block(index, layer, queries, keys, tokens, terms, batch)
        # The final attention is per token (its queries never mix), and only the IoU token and the
        # single-mask token are read after it: the other five would be a third of the prompt's
        # 4096-row products for nothing.
        final, read = tr.final_attn_token_to_image, slice(0, 2)
        attn = _tokens_to_image(final, queries[:, read] + tokens[:, read], keys + self.pe, keys)
        queries = tr.norm_final_attn(queries[:, read] + attn)

        hyper = dec.output_hypernetworks_mlps[0](queries[:, 1])  # the single-mask token
        iou = dec.iou_prediction_head(queries[:, 0])[:, 0]
        return (tuple(keys), hyper), iou  # keys: each prompt's (h*w, C) image tokens

    def logits(self, state, first=0, stop=None, extent=None):
        """(n, 4h, 4w) mask logits of prompts first..stop-1 of a prompted() state; each prompt's are
        the same whichever others are upscaled with it (the upscaling runs prompt by prompt).
        extent (height, width): only the top-left part of the grid that the caller reads (the
        image without its padding); the logits returned cover it in whole tokens (4 x 4 pixels)
        and the padding's tokens are not upscaled (a 122 x 101 CT slice fills 212 of 256 rows)."""
        keys, hyper = state
        keys, hyper = keys[first:stop], hyper[first:stop]
        batch = len(keys)
        h, w = self.grid
        rows, cols = (h, w) if extent is None else (min(h, -(-extent[0] // 4)), min(w, -(-extent[1] // 4)))
        logits = self._upscaled_logits(keys, hyper, rows, cols)  # (n, rows*cols, 16)
        # [b, y, x, i, j, k, l] is the logit of pixel (4y + 2i + k, 4x + 2j + l)
        logits = logits.view(batch, rows, cols, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6)
        return logits.reshape(batch, 4 * rows, 4 * cols)

    def __call__(self, embedding, sparse, extent=None):
        state, iou = self.prompted(embedding, sparse)
        return self.logits(state, extent=extent), iou
