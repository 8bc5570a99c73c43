"""Multi-head attention, after Vaswani et al. 2017, "Attention Is All You Need" (arXiv:1706.03762).

``Attention(Q, K, V) = softmax(Q Kᵀ / √d_k + M) V``, computed per head on ``num_heads`` slices of
the embedding and merged by an output projection.

:class:`MultiHeadAttention` is a drop-in for ``torch.nn.MultiheadAttention`` (same constructor
order up to ``bias``, same ``forward`` signature, same mask conventions, same ``state_dict`` keys,
so weights load both ways), with two implementations selectable per module:

* ``attn_impl="sdpa"`` (default): ``torch.nn.functional.scaled_dot_product_attention``, which
  dispatches to fused kernels (FlashAttention / memory-efficient attention on GPU, a fused
  flash kernel on CPU) and never materialises the L×S score matrix when it can avoid it;
* ``attn_impl="math"``: the explicit ``softmax(QKᵀ/√d)·V``, used whenever ``need_weights=True``.

Mask conventions (as in torch): a boolean mask is ``True`` where attention is *not* allowed; a
float mask is added to the scores. Masks are converted to the compute dtype with ``-inf`` (never a
finite sentinel like ``-1e9``, which overflows fp16), so autocast fp16/bf16 is safe. Rows where
every key is masked produce zero attention weights and a zero context vector in both paths (as
torch's SDPA path does; torch's ``need_weights=True`` path returns NaN for such rows instead).

Differences from torch: ``need_weights`` defaults to ``False`` (torch: ``True``, which forces its
slow path), so pass it explicitly when comparing; ``is_causal=True`` without ``attn_mask`` builds the
causal mask instead of raising; ``kdim``/``vdim``, ``add_bias_kv`` and ``add_zero_attn`` are not offered.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AttnImpl = Literal["sdpa", "math"]

__all__ = ["MultiHeadAttention", "scaled_dot_product_attention_math"]


def _mask_to_additive(mask: Tensor, dtype: torch.dtype, name: str) -> Tensor:
    """Return ``mask`` as an additive float mask in ``dtype`` (bool ``True`` -> ``-inf``)."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    if mask.is_floating_point():
        return mask.to(dtype)
    raise ValueError(f"{name}: got dtype {mask.dtype}, expected torch.bool or a floating-point dtype")


def _causal_mask(q_len: int, k_len: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Additive causal mask (q_len, k_len), top-left aligned like SDPA's ``is_causal``."""
    allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril_()  # (L, S)
    return torch.zeros(q_len, k_len, dtype=dtype, device=device).masked_fill_(~allowed, float("-inf"))


def scaled_dot_product_attention_math(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    training: bool = True,
) -> tuple[Tensor, Tensor]:
    """Explicit ``softmax(q kᵀ/√d + attn_mask) v``; returns ``(output, weights)``.

    ``q``: (B, H, L, D), ``k``/``v``: (B, H, S, D), ``attn_mask``: additive, broadcastable to
    (B, H, L, S). Fully masked rows give zero weights (and finite gradients) instead of NaN.
    """
    scale = 1.0 / math.sqrt(q.size(-1))
    scores = torch.matmul(q * scale, k.transpose(-2, -1))  # (B, H, L, S)
    fully_masked: Tensor | None = None
    if attn_mask is not None:
        scores = scores + attn_mask  # (B, H, L, S)
        fully_masked = scores.amax(dim=-1, keepdim=True) == float("-inf")  # (B, H, L, 1)
        # a row of all -inf would softmax to NaN (and poison the backward): give it finite scores,
        # then zero its weights below.
        scores = scores.masked_fill(fully_masked, 0.0)
    weights = torch.softmax(scores, dim=-1)  # (B, H, L, S)
    if fully_masked is not None:
        weights = weights.masked_fill(fully_masked, 0.0)
    if dropout_p > 0.0 and training:
        weights = F.dropout(weights, p=dropout_p)
    return torch.matmul(weights, v), weights  # (B, H, L, D), (B, H, L, S)


class MultiHeadAttention(nn.Module):
    """Multi-head (self- or cross-) attention compatible with ``torch.nn.MultiheadAttention``.

    Args:
        embed_dim: model dimension E (query, key and value all have E features).
        num_heads: number of heads H; ``embed_dim`` must be divisible by it.
        dropout: dropout probability on the attention weights (training only).
        bias: add biases to the input and output projections.
        batch_first: inputs are (B, L, E) when True (the default here), (L, B, E) otherwise.
        attn_impl: ``"sdpa"`` (fused ``scaled_dot_product_attention``) or ``"math"`` (explicit).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        batch_first: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        attn_impl: AttnImpl = "sdpa",
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim: got embed_dim={embed_dim}, num_heads={num_heads}; expected positive values "
                f"with embed_dim divisible by num_heads"
            )
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout: got {dropout}, expected a probability in [0, 1]")
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.kdim = embed_dim
        self.vdim = embed_dim
        self._qkv_same_embed_dim = True
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.attn_impl: AttnImpl = attn_impl  # validated on assignment via __setattr__ below
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
        if bias:
            self.in_proj_bias: nn.Parameter | None = nn.Parameter(torch.empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self._reset_parameters()

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "attn_impl" and value not in ("sdpa", "math"):
            raise ValueError(f"attn_impl: got {value!r}, expected 'sdpa' or 'math'")
        super().__setattr__(name, value)

    def _reset_parameters(self) -> None:
        # same initialisation as torch.nn.MultiheadAttention
        nn.init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
            f"batch_first={self.batch_first}, attn_impl={self.attn_impl!r}"
        )

    # ------------------------------------------------------------------ input checks
    def _check_inputs(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        if query.dim() not in (2, 3):
            raise ValueError(
                f"query: got shape {tuple(query.shape)}, expected 3-D "
                f"{'(batch, tgt_len, embed_dim)' if self.batch_first else '(tgt_len, batch, embed_dim)'} "
                f"or 2-D (tgt_len, embed_dim)"
            )
        for name, t in (("key", key), ("value", value)):
            if t.dim() != query.dim():
                raise ValueError(
                    f"{name}: got shape {tuple(t.shape)}, expected {query.dim()}-D like query "
                    f"{tuple(query.shape)}"
                )
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.size(-1) != self.embed_dim:
                raise ValueError(
                    f"{name}: got shape {tuple(t.shape)} with embedding dim {t.size(-1)}, "
                    f"expected embedding dim embed_dim={self.embed_dim}"
                )
        if query.dim() == 3:
            b_dim = 0 if self.batch_first else 1
            for name, t in (("key", key), ("value", value)):
                if t.size(b_dim) != query.size(b_dim):
                    raise ValueError(
                        f"{name}: got shape {tuple(t.shape)} with batch size {t.size(b_dim)}, expected "
                        f"batch size {query.size(b_dim)} like query {tuple(query.shape)}"
                    )
        if key.shape[:-1] != value.shape[:-1]:
            raise ValueError(
                f"value: got shape {tuple(value.shape)}, expected the same batch and sequence dims as key "
                f"{tuple(key.shape)}"
            )

    def _merge_masks(
        self,
        attn_mask: Tensor | None,
        key_padding_mask: Tensor | None,
        bsz: int,
        tgt_len: int,
        src_len: int,
        dtype: torch.dtype,
    ) -> Tensor | None:
        """One additive mask broadcastable to (B, H, L, S), or None."""
        merged: Tensor | None = None
        if attn_mask is not None:
            if attn_mask.dim() == 2:
                if attn_mask.shape != (tgt_len, src_len):
                    raise ValueError(
                        f"attn_mask: got shape {tuple(attn_mask.shape)}, expected (tgt_len, src_len) = "
                        f"({tgt_len}, {src_len}) or (batch * num_heads, tgt_len, src_len) = "
                        f"({bsz * self.num_heads}, {tgt_len}, {src_len})"
                    )
                merged = _mask_to_additive(attn_mask, dtype, "attn_mask")  # (L, S)
            elif attn_mask.dim() == 3:
                if attn_mask.shape != (bsz * self.num_heads, tgt_len, src_len):
                    raise ValueError(
                        f"attn_mask: got shape {tuple(attn_mask.shape)}, expected (batch * num_heads, "
                        f"tgt_len, src_len) = ({bsz * self.num_heads}, {tgt_len}, {src_len}) or "
                        f"(tgt_len, src_len) = ({tgt_len}, {src_len})"
                    )
                merged = _mask_to_additive(attn_mask, dtype, "attn_mask")
                merged = merged.view(bsz, self.num_heads, tgt_len, src_len)  # (B, H, L, S)
            else:
                raise ValueError(
                    f"attn_mask: got shape {tuple(attn_mask.shape)}, expected 2-D (tgt_len, src_len) = "
                    f"({tgt_len}, {src_len}) or 3-D (batch * num_heads, tgt_len, src_len) = "
                    f"({bsz * self.num_heads}, {tgt_len}, {src_len})"
                )
        if key_padding_mask is not None:
            if key_padding_mask.shape != (bsz, src_len):
                raise ValueError(
                    f"key_padding_mask: got shape {tuple(key_padding_mask.shape)}, expected (batch, src_len) "
                    f"= ({bsz}, {src_len})"
                )
            kpm = _mask_to_additive(key_padding_mask, dtype, "key_padding_mask")
            kpm = kpm.view(bsz, 1, 1, src_len)  # (B, 1, 1, S)
            merged = kpm if merged is None else merged + kpm  # (B, H|1, L, S)
        return merged

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = False,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``key``/``value``; returns ``(output, weights or None)``.

        Shapes (batch_first): query (B, L, E), key/value (B, S, E), key_padding_mask (B, S),
        attn_mask (L, S) or (B*H, L, S); output (B, L, E); weights (B, L, S) averaged over heads or
        (B, H, L, S) per head. Unbatched inputs (L, E) / (S, E) are accepted too.
        ``is_causal=True`` is a hint that ``attn_mask`` is the causal mask (as in torch); without an
        ``attn_mask`` the causal mask (top-left aligned) is applied.
        """
        self._check_inputs(query, key, value)
        is_self = query is key and key is value
        kv_same = key is value
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)  # (1, L, E)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)  # (1, S)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)  # (B, L, E)
        bsz, tgt_len, _ = query.shape
        src_len = key.size(1)
        heads, head_dim, embed = self.num_heads, self.head_dim, self.embed_dim

        # input projections: one packed matmul for self-attention, two for shared key/value
        w, b = self.in_proj_weight, self.in_proj_bias
        if is_self:
            qkv = F.linear(query, w, b)  # (B, L, 3E)
            qkv = qkv.view(bsz, tgt_len, 3, heads, head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, L, D)
            q, k, v = qkv.unbind(0)  # each (B, H, L, D), strided views, no copy
        else:
            b_q, b_kv = (None, None) if b is None else (b[:embed], b[embed:])
            q = F.linear(query, w[:embed], b_q).view(bsz, tgt_len, heads, head_dim).transpose(1, 2)
            if kv_same:
                kv = F.linear(key, w[embed:], b_kv)  # (B, S, 2E)
                kv = kv.view(bsz, src_len, 2, heads, head_dim).permute(2, 0, 3, 1, 4)  # (2, B, H, S, D)
                k, v = kv.unbind(0)  # each (B, H, S, D)
            else:
                b_k, b_v = (None, None) if b_kv is None else (b_kv[:embed], b_kv[embed:])
                k = F.linear(key, w[embed : 2 * embed], b_k)  # (B, S, E)
                v = F.linear(value, w[2 * embed :], b_v)  # (B, S, E)
                k = k.view(bsz, src_len, heads, head_dim).transpose(1, 2)  # (B, H, S, D)
                v = v.view(bsz, src_len, heads, head_dim).transpose(1, 2)  # (B, H, S, D)

        dropout_p = self.dropout if self.training else 0.0
        use_math = need_weights or self.attn_impl == "math"
        # torch's rule: is_causal with a given attn_mask is only a hint; the mask itself is used
        # whenever a key padding mask must be merged or weights are needed.
        sdpa_causal = is_causal and key_padding_mask is None and not use_math
        if sdpa_causal:
            mask = None
            # validate a hinted mask even though SDPA's causal kernel replaces it
            self._merge_masks(attn_mask, None, bsz, tgt_len, src_len, q.dtype)
        else:
            if is_causal and attn_mask is None:
                attn_mask = _causal_mask(tgt_len, src_len, q.dtype, q.device)  # (L, S)
            mask = self._merge_masks(attn_mask, key_padding_mask, bsz, tgt_len, src_len, q.dtype)

        weights: Tensor | None = None
        if use_math:
            ctx, weights = scaled_dot_product_attention_math(q, k, v, mask, dropout_p, self.training)
        else:
            ctx = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=sdpa_causal
            )  # (B, H, L, D)
        ctx = ctx.transpose(1, 2).reshape(bsz, tgt_len, embed)  # (B, H, L, D) -> (B, L, E)
        out = self.out_proj(ctx)  # (B, L, E)

        if unbatched:
            out = out.squeeze(0)  # (L, E)
        elif not self.batch_first:
            out = out.transpose(0, 1)  # (L, B, E)
        if not need_weights or weights is None:
            return out, None
        if average_attn_weights:
            weights = weights.mean(dim=1)  # (B, L, S)
        if unbatched:
            weights = weights.squeeze(0)  # (L, S) or (H, L, S)
        return out, weights
