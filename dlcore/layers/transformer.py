"""The Transformer encoder-decoder, after Vaswani et al. 2017, "Attention Is All You Need".

Post-norm (the paper's ``LayerNorm(x + Sublayer(x))``) and pre-norm (``x + Sublayer(LayerNorm(x))``,
Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture") layers, built on
:class:`dlcore.layers.attention.MultiHeadAttention`.

:class:`TransformerEncoderLayer`, :class:`TransformerEncoder`, :class:`TransformerDecoderLayer` and
:class:`TransformerDecoder` take the constructor arguments and ``forward`` arguments of their
``torch.nn`` namesakes (with ``batch_first=True`` as the default) and have the same ``state_dict``
keys, so weights load both ways. Like torch's, they also take unbatched input: ``(L, E)`` in,
``(L, E)`` out, with key padding masks of shape ``(L,)`` and attention masks ``(L, S)`` or
``(num_heads, L, S)``. They never take torch's inference fast path or convert inputs to
nested tensors: every position, padded or not, is computed the same way in train and eval.

:class:`Transformer` is the seq2seq model of the paper: token embeddings scaled by ``sqrt(d_model)``,
sinusoidal positions, encoder, decoder, and a projection to the target vocabulary. The decoder's
cross-attention takes ``memory_mask`` of shape (tgt_len, src_len); the encoder's ``src_mask``
(src_len, src_len) is never reused for it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlcore.layers.attention import MultiHeadAttention
from dlcore.layers.positional import SinusoidalPositionalEncoding

__all__ = [
    "Transformer",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "generate_square_subsequent_mask",
]

Activation = str | Callable[[Tensor], Tensor]


def generate_square_subsequent_mask(
    sz: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """Causal mask (sz, sz): ``0.0`` where attention is allowed (j <= i), ``-inf`` above the diagonal.

    Same convention as ``torch.nn.Transformer.generate_square_subsequent_mask``: a float mask that
    attention *adds* to its scores.
    """
    if sz < 0:
        raise ValueError(f"sz: got {sz}, expected a non-negative sequence length")
    if dtype is None:
        dtype = torch.get_default_dtype()
    return torch.triu(torch.full((sz, sz), float("-inf"), dtype=dtype, device=device), diagonal=1)  # (sz, sz)


def _detect_is_causal(mask: Tensor | None, is_causal: bool | None, size: int) -> bool:
    """``is_causal=None`` means: check whether ``mask`` is the causal mask (as torch's stacks do)."""
    if is_causal is not None:
        return is_causal
    if mask is None or mask.shape != (size, size):
        return False
    if mask.dtype == torch.bool:
        causal = torch.ones(size, size, dtype=torch.bool, device=mask.device).triu_(diagonal=1)
    else:
        causal = generate_square_subsequent_mask(size, device=mask.device, dtype=mask.dtype)
    return bool(torch.equal(mask, causal))


def _get_activation(activation: Activation) -> Callable[[Tensor], Tensor]:
    if isinstance(activation, str):
        if activation == "relu":
            return F.relu
        if activation == "gelu":
            return F.gelu
        raise ValueError(f"activation: got {activation!r}, expected 'relu', 'gelu' or a callable")
    if callable(activation):
        return activation
    raise ValueError(f"activation: got {type(activation).__name__}, expected 'relu', 'gelu' or a callable")


def _check_input(name: str, x: Tensor, d_model: int, batch_first: bool) -> None:
    """``x`` must be batched (3-D, laid out as ``batch_first`` says) or unbatched (seq_len, d_model)."""
    if x.dim() not in (2, 3) or x.size(-1) != d_model:
        layout = "(batch, seq_len, d_model)" if batch_first else "(seq_len, batch, d_model)"
        raise ValueError(
            f"{name}: got shape {tuple(x.shape)}, expected {layout} or unbatched (seq_len, d_model) "
            f"with d_model={d_model}"
        )


def _batch_padding_mask(name: str, mask: Tensor | None, x: Tensor) -> Tensor | None:
    """The key padding mask ``(L,)`` of an unbatched ``x`` (L, E) as that of a batch of one, ``(1, L)``."""
    if mask is None:
        return None
    if mask.shape != (x.size(0),):
        raise ValueError(
            f"{name}: got shape {tuple(mask.shape)}, expected (seq_len,) = ({x.size(0)},) for the unbatched "
            f"input of shape {tuple(x.shape)}"
        )
    return mask.unsqueeze(0)  # (1, L)


def _seq_len(x: Tensor, batch_first: bool) -> int:
    """Sequence length of a batched or unbatched input (-1 for a malformed one: the layer will raise)."""
    if x.dim() == 2:
        return x.size(0)
    if x.dim() == 3:
        return x.size(1 if batch_first else 0)
    return -1


class TransformerEncoderLayer(nn.Module):
    """Self-attention + feed-forward block; drop-in for ``torch.nn.TransformerEncoderLayer``."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Activation = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = True,
        norm_first: bool = False,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.self_attn = MultiHeadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **factory
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _get_activation(activation)
        self.d_model = d_model
        self.batch_first = batch_first

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """src: (B, L, E) (batch_first) -> (B, L, E); masks as in :class:`MultiHeadAttention`.

        Unbatched ``src`` (L, E) -> (L, E), with ``src_key_padding_mask`` (L,) (as in torch).
        """
        _check_input("src", src, self.d_model, self.batch_first)
        b_dim = 0 if self.batch_first else 1
        unbatched = src.dim() == 2
        if unbatched:
            src_key_padding_mask = _batch_padding_mask("src_key_padding_mask", src_key_padding_mask, src)
            src = src.unsqueeze(b_dim)  # a batch of one; a 3-D src_mask (H, L, S) is then (1 * H, L, S)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x.squeeze(b_dim) if unbatched else x

    def _sa_block(
        self, x: Tensor, attn_mask: Tensor | None, key_padding_mask: Tensor | None, is_causal: bool
    ) -> Tensor:
        x = self.self_attn(
            x,
            x,
            x,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            need_weights=False,
            is_causal=is_causal,
        )[0]  # (B, L, E)
        return self.dropout1(x)

    def _ff_block(self, x: Tensor) -> Tensor:
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))  # (B, L, F) -> (B, L, E)
        return self.dropout2(x)


class TransformerDecoderLayer(nn.Module):
    """Masked self-attention, cross-attention and feed-forward; drop-in for ``nn.TransformerDecoderLayer``."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Activation = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = True,
        norm_first: bool = False,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.self_attn = MultiHeadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **factory
        )
        self.multihead_attn = MultiHeadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **factory
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **factory)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = _get_activation(activation)
        self.d_model = d_model
        self.batch_first = batch_first

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> Tensor:
        """tgt: (B, T, E), memory: (B, S, E) -> (B, T, E); tgt_mask (T, T), memory_mask (T, S).

        Unbatched ``tgt`` (T, E) and ``memory`` (S, E) -> (T, E), with key padding masks (T,) and (S,)
        (as in torch).
        """
        _check_input("tgt", tgt, self.d_model, self.batch_first)
        _check_input("memory", memory, self.d_model, self.batch_first)
        b_dim = 0 if self.batch_first else 1
        unbatched = tgt.dim() == 2
        if memory.dim() != tgt.dim():
            raise ValueError(
                f"memory: got shape {tuple(memory.shape)}, expected {tgt.dim()}-D like tgt "
                f"{tuple(tgt.shape)} (both batched or both unbatched)"
            )
        if unbatched:
            tgt_key_padding_mask = _batch_padding_mask("tgt_key_padding_mask", tgt_key_padding_mask, tgt)
            memory_key_padding_mask = _batch_padding_mask(
                "memory_key_padding_mask", memory_key_padding_mask, memory
            )
            tgt, memory = tgt.unsqueeze(b_dim), memory.unsqueeze(b_dim)  # batches of one
        if memory.size(b_dim) != tgt.size(b_dim):
            raise ValueError(
                f"memory: got shape {tuple(memory.shape)} with batch size {memory.size(b_dim)}, expected "
                f"batch size {tgt.size(b_dim)} like tgt {tuple(tgt.shape)}"
            )
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(
                self.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal
            )
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
            x = self.norm2(
                x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal)
            )
            x = self.norm3(x + self._ff_block(x))
        return x.squeeze(b_dim) if unbatched else x

    def _sa_block(
        self, x: Tensor, attn_mask: Tensor | None, key_padding_mask: Tensor | None, is_causal: bool
    ) -> Tensor:
        x = self.self_attn(
            x,
            x,
            x,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            need_weights=False,
            is_causal=is_causal,
        )[0]  # (B, T, E)
        return self.dropout1(x)

    def _mha_block(
        self,
        x: Tensor,
        mem: Tensor,
        attn_mask: Tensor | None,
        key_padding_mask: Tensor | None,
        is_causal: bool,
    ) -> Tensor:
        x = self.multihead_attn(
            x,
            mem,
            mem,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            need_weights=False,
            is_causal=is_causal,
        )[0]  # (B, T, E) attending over (B, S, E)
        return self.dropout2(x)

    def _ff_block(self, x: Tensor) -> Tensor:
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))  # (B, T, F) -> (B, T, E)
        return self.dropout3(x)


class TransformerEncoder(nn.Module):
    """A stack of ``num_layers`` deep copies of ``encoder_layer``, then an optional ``norm``.

    ``enable_nested_tensor`` and ``mask_check`` are accepted for signature compatibility with
    ``torch.nn.TransformerEncoder`` and have no effect: inputs are never converted to nested tensors.
    """

    def __init__(
        self,
        encoder_layer: TransformerEncoderLayer,
        num_layers: int,
        norm: nn.Module | None = None,
        enable_nested_tensor: bool = True,
        mask_check: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers: got {num_layers}, expected a positive integer")
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        self.mask_check = mask_check

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool | None = False,
    ) -> Tensor:
        """src: (B, L, E) -> (B, L, E), or unbatched (L, E) -> (L, E). ``is_causal=None`` detects a causal
        ``mask`` (as torch does)."""
        causal = _detect_is_causal(mask, is_causal, _seq_len(src, bool(self.layers[0].batch_first)))
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=causal)
        if self.norm is not None:
            x = self.norm(x)
        return x


class TransformerDecoder(nn.Module):
    """A stack of ``num_layers`` deep copies of ``decoder_layer``, then an optional ``norm``."""

    def __init__(
        self, decoder_layer: TransformerDecoderLayer, num_layers: int, norm: nn.Module | None = None
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers: got {num_layers}, expected a positive integer")
        self.layers = nn.ModuleList([copy.deepcopy(decoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool | None = False,
        memory_is_causal: bool = False,
    ) -> Tensor:
        """tgt: (B, T, E), memory: (B, S, E) -> (B, T, E), or unbatched (T, E), (S, E) -> (T, E).
        ``tgt_is_causal=None`` detects a causal mask."""
        causal = _detect_is_causal(tgt_mask, tgt_is_causal, _seq_len(tgt, bool(self.layers[0].batch_first)))
        x = tgt
        for layer in self.layers:
            x = layer(
                x,
                memory,
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                tgt_is_causal=causal,
                memory_is_causal=memory_is_causal,
            )
        if self.norm is not None:
            x = self.norm(x)
        return x


class Transformer(nn.Module):
    """Sequence-to-sequence Transformer: token ids in, target-vocabulary logits out.

    ``src`` (B, S) and ``tgt`` (B, T) token ids (``batch_first=True``; (S, B)/(T, B) otherwise) ->
    logits (B, T, tgt_vocab_size). Embeddings are scaled by ``sqrt(d_model)`` and summed with
    sinusoidal positions. With ``norm_first=True`` the encoder and decoder end with a LayerNorm
    (pre-norm stacks need one); post-norm stacks already end normalised and have none.

    Masks: ``src_mask`` (S, S) for encoder self-attention, ``tgt_mask`` (T, T) for decoder
    self-attention (e.g. :func:`generate_square_subsequent_mask`), ``memory_mask`` (T, S) for
    cross-attention. Padding masks are passed explicitly, as in ``torch.nn.Transformer``: a padded
    source needs both ``src_key_padding_mask`` and ``memory_key_padding_mask``.
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        max_len: int = 5000,
        activation: Activation = "relu",
        norm_first: bool = False,
        batch_first: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.batch_first = batch_first
        self.src_embedding = nn.Embedding(src_vocab_size, d_model, **factory)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, d_model, **factory)
        self.pos_encoding = SinusoidalPositionalEncoding(d_model, max_len=max_len, dropout=dropout).to(device)
        # layers inside are batch-first; a seq-first model transposes the token ids once at entry
        layer_kw: dict[str, Any] = dict(
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            activation=activation,
            layer_norm_eps=layer_norm_eps,
            batch_first=True,
            norm_first=norm_first,
            **factory,
        )
        enc_norm = nn.LayerNorm(d_model, eps=layer_norm_eps, **factory) if norm_first else None
        dec_norm = nn.LayerNorm(d_model, eps=layer_norm_eps, **factory) if norm_first else None
        self.encoder = TransformerEncoder(
            TransformerEncoderLayer(d_model, nhead, **layer_kw), num_encoder_layers, norm=enc_norm
        )
        self.decoder = TransformerDecoder(
            TransformerDecoderLayer(d_model, nhead, **layer_kw), num_decoder_layers, norm=dec_norm
        )
        self.output_projection = nn.Linear(d_model, tgt_vocab_size, **factory)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # as torch.nn.Transformer: Xavier for every matrix; embeddings N(0, d_model^-1/2) so that
        # after the sqrt(d_model) scaling they are of unit scale, like the positional encoding.
        for name, p in self.named_parameters():
            if name.startswith(("src_embedding", "tgt_embedding")):
                nn.init.normal_(p, mean=0.0, std=self.d_model**-0.5)
            elif p.dim() > 1:
                nn.init.xavier_uniform_(p)

    @staticmethod
    def generate_square_subsequent_mask(
        sz: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """See :func:`generate_square_subsequent_mask`."""
        return generate_square_subsequent_mask(sz, device=device, dtype=dtype)

    def _embed(self, name: str, tokens: Tensor, embedding: nn.Embedding) -> Tensor:
        if tokens.dim() != 2:
            layout = "(batch, seq_len)" if self.batch_first else "(seq_len, batch)"
            raise ValueError(f"{name}: got shape {tuple(tokens.shape)}, expected token ids {layout}")
        if not self.batch_first:
            tokens = tokens.t()  # (L, B) -> (B, L)
        x = embedding(tokens) * math.sqrt(self.d_model)  # (B, L) -> (B, L, E)
        return self.pos_encoding(x)  # (B, L, E)

    def encode(
        self, src: Tensor, src_mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None
    ) -> Tensor:
        """src token ids -> memory (B, S, E)."""
        x = self._embed("src", src, self.src_embedding)  # (B, S, E)
        return self.encoder(x, mask=src_mask, src_key_padding_mask=src_key_padding_mask)

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
    ) -> Tensor:
        """tgt token ids and memory (B, S, E) -> logits (B, T, tgt_vocab_size)."""
        y = self._embed("tgt", tgt, self.tgt_embedding)  # (B, T, E)
        y = self.decoder(
            y,
            memory,
            tgt_mask=tgt_mask,
            memory_mask=memory_mask,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
            tgt_is_causal=tgt_is_causal,
        )  # (B, T, E)
        logits = self.output_projection(y)  # (B, T, V)
        return logits if self.batch_first else logits.transpose(0, 1)  # (T, B, V) when seq-first

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
    ) -> Tensor:
        """src (B, S), tgt (B, T) token ids -> logits (B, T, tgt_vocab_size).

        ``tgt_is_causal=True`` applies the causal mask to decoder self-attention (with ``tgt_mask``
        None it is built, and on the fused path never materialised).
        """
        b_dim = 0 if self.batch_first else 1
        if src.dim() == 2 and tgt.dim() == 2 and src.size(b_dim) != tgt.size(b_dim):
            raise ValueError(
                f"tgt: got shape {tuple(tgt.shape)} with batch size {tgt.size(b_dim)}, expected batch size "
                f"{src.size(b_dim)} like src {tuple(src.shape)}"
            )
        memory = self.encode(src, src_mask, src_key_padding_mask)  # (B, S, E)
        return self.decode(
            tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask, tgt_is_causal
        )
