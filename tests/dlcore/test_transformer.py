"""dlcore Transformer layers and stacks against their torch.nn namesakes; the seq2seq model."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import dlcore
from dlcore import (
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    generate_square_subsequent_mask,
)

D, NH, FF = 16, 4, 32
B, T, S = 2, 5, 7  # tgt_len != src_len on purpose


def _perturb_(module: nn.Module) -> None:
    with torch.no_grad():  # non-trivial LayerNorm affine and biases
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))


def _grads_and_out(
    module: nn.Module, inputs: list[torch.Tensor], kwargs: dict[str, Any]
) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
    xs = [x.detach().clone().requires_grad_() for x in inputs]
    module.zero_grad(set_to_none=True)
    out = module(*xs, **kwargs)
    torch.manual_seed(321)
    out.backward(torch.randn(out.shape, dtype=out.dtype))  # not randn_like: strides may differ
    return out, [x.grad for x in xs], {n: p.grad for n, p in module.named_parameters()}


def assert_same(ref: nn.Module, ours: nn.Module, inputs: list[torch.Tensor], kwargs: dict[str, Any]) -> None:
    o_ref, gx_ref, gp_ref = _grads_and_out(ref, inputs, kwargs)
    o_ours, gx_ours, gp_ours = _grads_and_out(ours, inputs, kwargs)
    torch.testing.assert_close(o_ours, o_ref)
    for a, b in zip(gx_ours, gx_ref, strict=True):
        torch.testing.assert_close(a, b)
    assert gp_ours.keys() == gp_ref.keys()
    for name in gp_ref:
        torch.testing.assert_close(gp_ours[name], gp_ref[name], msg=lambda m, n=name: f"{n}: {m}")


def enc_pair(dtype: torch.dtype, **kw: Any) -> tuple[nn.TransformerEncoderLayer, TransformerEncoderLayer]:
    kw = {"dim_feedforward": FF, "dropout": 0.0, "batch_first": True, **kw}
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(D, NH, dtype=dtype, **kw)
    _perturb_(ref)
    ours = TransformerEncoderLayer(D, NH, dtype=dtype, **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def dec_pair(dtype: torch.dtype, **kw: Any) -> tuple[nn.TransformerDecoderLayer, TransformerDecoderLayer]:
    kw = {"dim_feedforward": FF, "dropout": 0.0, "batch_first": True, **kw}
    torch.manual_seed(0)
    ref = nn.TransformerDecoderLayer(D, NH, dtype=dtype, **kw)
    _perturb_(ref)
    ours = TransformerDecoderLayer(D, NH, dtype=dtype, **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _kpm(b: int, n: int) -> torch.Tensor:
    m = torch.rand(b, n) < 0.4
    m[:, 0] = False
    return m


def _float(mask: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Bool mask -> additive float mask (torch warns when bool and float masks are mixed)."""
    return torch.zeros(mask.shape, dtype=dtype).masked_fill(mask, float("-inf"))


BAD_MEMORY_MASK = r"attn_mask: got shape \(7, 7\), expected \(tgt_len, src_len\) = \(5, 7\)"
DTYPES = pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
NORM = pytest.mark.parametrize("norm_first", [False, True], ids=["post", "pre"])
ACT = pytest.mark.parametrize("activation", ["relu", "gelu"])


# ---------------------------------------------------------------------------------------- the mask helper
@pytest.mark.parametrize("sz", [0, 1, 6])
def test_generate_square_subsequent_mask_matches_torch(sz: int) -> None:
    ours = generate_square_subsequent_mask(sz)
    torch.testing.assert_close(ours, nn.Transformer.generate_square_subsequent_mask(sz))
    assert generate_square_subsequent_mask(3, dtype=torch.float64).dtype == torch.float64
    assert Transformer.generate_square_subsequent_mask(4).shape == (4, 4)


def test_generate_square_subsequent_mask_rejects_negative_size() -> None:
    with pytest.raises(ValueError, match="sz: got -2"):
        generate_square_subsequent_mask(-2)


# ---------------------------------------------------------------------------------------- encoder layer
@DTYPES
@NORM
@ACT
@pytest.mark.parametrize("masks", ["none", "kpm+bool", "causal_float", "is_causal_hint"])
def test_encoder_layer_parity(dtype: torch.dtype, norm_first: bool, activation: str, masks: str) -> None:
    ref, ours = enc_pair(dtype, norm_first=norm_first, activation=activation)
    x = torch.randn(B, T, D, dtype=dtype)
    kw: dict[str, Any] = {}
    if masks == "kpm+bool":
        kw = {"src_key_padding_mask": _kpm(B, T), "src_mask": torch.rand(T, T) < 0.3}
        kw["src_mask"][:, 0] = False
    elif masks == "causal_float":
        kw = {"src_mask": generate_square_subsequent_mask(T, dtype=dtype)}
    elif masks == "is_causal_hint":
        kw = {"src_mask": generate_square_subsequent_mask(T, dtype=dtype), "is_causal": True}
    assert_same(ref, ours, [x], kw)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_encoder_layer_modes_3d_mask_callable_activation_no_bias(mode: str) -> None:
    ref, ours = enc_pair(torch.float64, activation=F.gelu, bias=False, layer_norm_eps=1e-6)
    getattr(ref, mode)()
    getattr(ours, mode)()
    mask = torch.randn(B * NH, T, T, dtype=torch.float64)
    assert_same(ref, ours, [torch.randn(B, T, D, dtype=torch.float64)], {"src_mask": mask})


def test_encoder_layer_eval_no_grad_matches_torch_fast_path() -> None:
    ref, ours = enc_pair(torch.float32)
    ref.eval()
    ours.eval()
    x = torch.randn(B, T, D)
    kpm = _kpm(B, T)
    with torch.no_grad():
        a = ref(x, src_key_padding_mask=kpm)  # torch._transformer_encoder_layer_fwd
        b = ours(x, src_key_padding_mask=kpm)
    keep = ~kpm  # torch's fast path may leave padded positions unspecified
    torch.testing.assert_close(b[keep], a[keep])


def test_encoder_layer_seq_first() -> None:
    ref, ours = enc_pair(torch.float64, batch_first=False)
    assert_same(ref, ours, [torch.randn(T, B, D, dtype=torch.float64)], {"src_key_padding_mask": _kpm(B, T)})


# ---------------------------------------------------------------------------------------- decoder layer
@DTYPES
@NORM
@ACT
def test_decoder_layer_parity_cross_attention_different_lengths(
    dtype: torch.dtype, norm_first: bool, activation: str
) -> None:
    ref, ours = dec_pair(dtype, norm_first=norm_first, activation=activation)
    memory_mask = torch.rand(T, S) < 0.3
    memory_mask[:, 0] = False
    kw = {
        "tgt_mask": generate_square_subsequent_mask(T, dtype=dtype),
        "memory_mask": memory_mask,
        "tgt_key_padding_mask": _float(_kpm(B, T), dtype),
        "memory_key_padding_mask": _kpm(B, S),
    }
    assert_same(ref, ours, [torch.randn(B, T, D, dtype=dtype), torch.randn(B, S, D, dtype=dtype)], kw)


def test_decoder_layer_causal_hint_and_eval() -> None:
    ref, ours = dec_pair(torch.float64)
    ref.eval()
    ours.eval()
    kw = {"tgt_mask": generate_square_subsequent_mask(T, dtype=torch.float64), "tgt_is_causal": True}
    x, mem = torch.randn(B, T, D, dtype=torch.float64), torch.randn(B, S, D, dtype=torch.float64)
    assert_same(ref, ours, [x, mem], kw)


def test_decoder_layer_bad_memory_raises() -> None:
    layer = TransformerDecoderLayer(D, NH, FF)
    with pytest.raises(ValueError, match=r"memory: got shape \(3, 7, 16\) with batch size 3, expected .* 2"):
        layer(torch.randn(B, T, D), torch.randn(3, S, D))
    with pytest.raises(ValueError, match=r"memory: got shape \(2, 7, 8\), expected \(batch, seq_len, d_"):
        layer(torch.randn(B, T, D), torch.randn(B, S, 8))
    with pytest.raises(ValueError, match=BAD_MEMORY_MASK):
        layer(torch.randn(B, T, D), torch.randn(B, S, D), memory_mask=torch.zeros(S, S, dtype=torch.bool))


def test_bad_activation_raises() -> None:
    with pytest.raises(ValueError, match=r"activation: got 'tanh', expected 'relu', 'gelu' or a callable"):
        TransformerEncoderLayer(D, NH, activation="tanh")


def test_encoder_layer_bad_src_raises() -> None:
    with pytest.raises(ValueError, match=r"src: got shape \(2, 5, 8\), expected \(batch, seq_len, d_model\)"):
        TransformerEncoderLayer(D, NH, FF)(torch.randn(B, T, 8))


# ---------------------------------------------------------------------------------------- stacks
@NORM
def test_encoder_and_decoder_stacks_parity_and_state_dict(norm_first: bool) -> None:
    dt = torch.float64
    ref_el, ours_el = enc_pair(dt, norm_first=norm_first)
    ref_dl, ours_dl = dec_pair(dt, norm_first=norm_first)
    ref_enc = nn.TransformerEncoder(ref_el, 2, norm=nn.LayerNorm(D, dtype=dt), enable_nested_tensor=False)
    ours_enc = TransformerEncoder(ours_el, 2, norm=nn.LayerNorm(D, dtype=dt))
    ref_dec = nn.TransformerDecoder(ref_dl, 2, norm=nn.LayerNorm(D, dtype=dt))
    ours_dec = TransformerDecoder(ours_dl, 2, norm=nn.LayerNorm(D, dtype=dt))
    for r, o in ((ref_enc, ours_enc), (ref_dec, ours_dec)):
        _perturb_(r)
        assert list(o.state_dict()) == list(r.state_dict())
        o.load_state_dict(r.state_dict())  # torch -> ours
        r.load_state_dict(o.state_dict())  # ours -> torch
    assert "layers.1.self_attn.in_proj_weight" in ours_enc.state_dict()
    assert "layers.0.multihead_attn.out_proj.bias" in ours_dec.state_dict()
    causal = generate_square_subsequent_mask(T, dtype=dt)
    x, mem = torch.randn(B, T, D, dtype=dt), torch.randn(B, S, D, dtype=dt)
    assert_same(ref_enc, ours_enc, [x], {"mask": causal, "src_key_padding_mask": _float(_kpm(B, T))})
    assert_same(ref_enc, ours_enc, [x], {"mask": causal, "is_causal": None})  # detected, as torch
    assert_same(ref_dec, ours_dec, [x, mem], {"tgt_mask": causal, "memory_key_padding_mask": _kpm(B, S)})


# ---------------------------------------------------------------------------------------- unbatched input
@NORM
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "seq_first"])
@pytest.mark.parametrize("masks", ["none", "kpm+bool", "kpm+3d_float", "is_causal_hint"])
def test_encoder_layer_unbatched_parity_regression(norm_first: bool, batch_first: bool, masks: str) -> None:
    # regression: (L, E) input was refused ("expected (batch, seq_len, d_model)"); torch takes it
    dt = torch.float64
    ref, ours = enc_pair(dt, norm_first=norm_first, batch_first=batch_first)
    x = torch.randn(T, D, dtype=dt)
    kpm = _kpm(1, T)[0]  # (T,)
    kw: dict[str, Any] = {}
    if masks == "kpm+bool":
        src_mask = torch.rand(T, T) < 0.3
        src_mask[:, 0] = False
        kw = {"src_key_padding_mask": kpm, "src_mask": src_mask}
    elif masks == "kpm+3d_float":  # torch's unbatched 3-D mask: (num_heads, L, S)
        kw = {"src_key_padding_mask": _float(kpm), "src_mask": torch.randn(NH, T, T, dtype=dt)}
    elif masks == "is_causal_hint":
        kw = {"src_mask": generate_square_subsequent_mask(T, dtype=dt), "is_causal": True}
    assert ours(x, **kw).shape == (T, D)
    assert_same(ref, ours, [x], kw)


@NORM
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "seq_first"])
def test_decoder_layer_unbatched_parity_regression(norm_first: bool, batch_first: bool) -> None:
    dt = torch.float64
    ref, ours = dec_pair(dt, norm_first=norm_first, batch_first=batch_first)
    memory_mask = torch.rand(T, S) < 0.3
    memory_mask[:, 0] = False
    kw = {
        "tgt_mask": generate_square_subsequent_mask(T, dtype=dt),
        "memory_mask": memory_mask,
        "tgt_key_padding_mask": _float(_kpm(1, T)[0]),
        "memory_key_padding_mask": _kpm(1, S)[0],
    }
    tgt, mem = torch.randn(T, D, dtype=dt), torch.randn(S, D, dtype=dt)
    assert ours(tgt, mem, **kw).shape == (T, D)
    assert_same(ref, ours, [tgt, mem], kw)


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "seq_first"])
def test_stacks_unbatched_parity_regression(batch_first: bool) -> None:
    dt = torch.float64
    ref_el, ours_el = enc_pair(dt, batch_first=batch_first)
    ref_dl, ours_dl = dec_pair(dt, batch_first=batch_first)
    ref_enc = nn.TransformerEncoder(ref_el, 2, norm=nn.LayerNorm(D, dtype=dt), enable_nested_tensor=False)
    ours_enc = TransformerEncoder(ours_el, 2, norm=nn.LayerNorm(D, dtype=dt))
    ref_dec = nn.TransformerDecoder(ref_dl, 2, norm=nn.LayerNorm(D, dtype=dt))
    ours_dec = TransformerDecoder(ours_dl, 2, norm=nn.LayerNorm(D, dtype=dt))
    for r, o in ((ref_enc, ours_enc), (ref_dec, ours_dec)):
        _perturb_(r)
        o.load_state_dict(r.state_dict())
    causal = generate_square_subsequent_mask(T, dtype=dt)
    x, mem = torch.randn(T, D, dtype=dt), torch.randn(S, D, dtype=dt)
    assert_same(ref_enc, ours_enc, [x], {"mask": causal, "src_key_padding_mask": _float(_kpm(1, T)[0])})
    assert_same(ref_enc, ours_enc, [x], {"mask": causal, "is_causal": None})  # detected, as torch
    kw = {"tgt_mask": causal, "tgt_is_causal": None, "memory_key_padding_mask": _kpm(1, S)[0]}
    assert_same(ref_dec, ours_dec, [x, mem], kw)


def test_unbatched_bad_masks_and_mixed_inputs_raise() -> None:
    enc, dec = TransformerEncoderLayer(D, NH, FF), TransformerDecoderLayer(D, NH, FF)
    with pytest.raises(ValueError, match=r"src_key_padding_mask: got shape \(1, 5\), expected \(seq_len,\)"):
        enc(torch.randn(T, D), src_key_padding_mask=torch.zeros(1, T, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"memory: got shape \(2, 7, 16\), expected 2-D like tgt"):
        dec(torch.randn(T, D), torch.randn(B, S, D))
    with pytest.raises(
        ValueError, match=r"memory_key_padding_mask: got shape \(5,\), expected \(seq_len,\) = \(7,\)"
    ):
        dec(torch.randn(T, D), torch.randn(S, D), memory_key_padding_mask=torch.zeros(T, dtype=torch.bool))


def test_stack_rejects_zero_layers() -> None:
    with pytest.raises(ValueError, match="num_layers: got 0"):
        TransformerEncoder(TransformerEncoderLayer(D, NH, FF), 0)


def test_layers_are_checkpoint_friendly() -> None:
    """Plain modules, no hidden state: non-reentrant checkpointing gives the same gradients."""
    torch.manual_seed(0)
    layer = TransformerDecoderLayer(D, NH, FF, dropout=0.0, norm_first=True)
    x, mem = torch.randn(B, T, D, requires_grad=True), torch.randn(B, S, D, requires_grad=True)
    layer(x, mem, tgt_is_causal=True).sum().backward()
    plain = [p.grad.clone() for p in layer.parameters()] + [x.grad.clone(), mem.grad.clone()]
    layer.zero_grad()
    x.grad = mem.grad = None
    checkpoint(layer, x, mem, tgt_is_causal=True, use_reentrant=False).sum().backward()
    ckpt = [p.grad for p in layer.parameters()] + [x.grad, mem.grad]
    for a, b in zip(ckpt, plain, strict=True):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------- seq2seq model
def small_model(**kw: Any) -> Transformer:
    torch.manual_seed(0)
    kw = {
        "d_model": D,
        "nhead": NH,
        "num_encoder_layers": 2,
        "num_decoder_layers": 2,
        "dim_feedforward": FF,
        "dropout": 0.0,
        "max_len": 32,
        **kw,
    }
    return Transformer(11, 13, **kw)


@NORM
def test_seq2seq_matches_torch_stacks_with_the_same_weights(norm_first: bool) -> None:
    dt = torch.float64
    model = small_model(norm_first=norm_first, dtype=dt)
    kw = {"dim_feedforward": FF, "dropout": 0.0, "batch_first": True, "norm_first": norm_first, "dtype": dt}
    final = (lambda: nn.LayerNorm(D, dtype=dt)) if norm_first else (lambda: None)
    ref_enc = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(D, NH, **kw), 2, norm=final(), enable_nested_tensor=False
    )
    ref_dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(D, NH, **kw), 2, norm=final())
    ref_enc.load_state_dict(model.encoder.state_dict())
    ref_dec.load_state_dict(model.decoder.state_dict())
    src, tgt = torch.randint(0, 11, (B, S)), torch.randint(0, 13, (B, T))
    src_kpm = _kpm(B, S)
    tgt_mask = generate_square_subsequent_mask(T, dtype=dt)
    logits = model(src, tgt, tgt_mask=tgt_mask, src_key_padding_mask=src_kpm, memory_key_padding_mask=src_kpm)
    assert logits.shape == (B, T, 13)

    scale = math.sqrt(D)
    x = model.pos_encoding(model.src_embedding(src) * scale)
    y = model.pos_encoding(model.tgt_embedding(tgt) * scale)
    memory = ref_enc(x, src_key_padding_mask=src_kpm)
    expected = model.output_projection(ref_dec(y, memory, tgt_mask=tgt_mask, memory_key_padding_mask=src_kpm))
    torch.testing.assert_close(logits, expected)
    # gradients of the shared stacks agree too
    logits.sum().backward()
    expected.sum().backward()
    for prefix, ref in (("encoder.", ref_enc), ("decoder.", ref_dec)):
        for name, p in ref.named_parameters():
            torch.testing.assert_close(model.get_parameter(prefix + name).grad, p.grad)


def test_seq2seq_cross_attention_gets_the_tgt_by_src_memory_mask() -> None:
    """Seed bug: the encoder's src×src mask was passed to cross-attention, which needs tgt×src."""
    model = small_model()
    seen: dict[str, list[tuple[int, ...] | None]] = {"enc_self": [], "dec_self": [], "cross": []}

    def recorder(key: str) -> Any:
        def hook(_m: nn.Module, _args: Any, kwargs: dict[str, Any]) -> None:
            mask = kwargs.get("attn_mask")
            seen[key].append(None if mask is None else tuple(mask.shape))

        return hook

    for layer in model.encoder.layers:
        layer.self_attn.register_forward_pre_hook(recorder("enc_self"), with_kwargs=True)
    for layer in model.decoder.layers:
        layer.self_attn.register_forward_pre_hook(recorder("dec_self"), with_kwargs=True)
        layer.multihead_attn.register_forward_pre_hook(recorder("cross"), with_kwargs=True)
    src, tgt = torch.randint(0, 11, (B, S)), torch.randint(0, 13, (B, T))
    src_mask = torch.zeros(S, S, dtype=torch.bool)
    memory_mask = torch.zeros(T, S, dtype=torch.bool)
    causal = generate_square_subsequent_mask(T)
    out = model(src, tgt, src_mask=src_mask, tgt_mask=causal, memory_mask=memory_mask)
    assert out.shape == (B, T, 13)
    assert seen == {"enc_self": [(S, S)] * 2, "dec_self": [(T, T)] * 2, "cross": [(T, S)] * 2}
    # without a memory_mask the src_mask is not reused for cross-attention
    for v in seen.values():
        v.clear()
    model(src, tgt, src_mask=src_mask)
    assert seen["cross"] == [None, None]
    # and a src×src mask given as memory_mask is refused with both shapes named
    with pytest.raises(ValueError, match=BAD_MEMORY_MASK):
        model(src, tgt, memory_mask=src_mask)


def test_seq2seq_memory_mask_blocks_source_positions() -> None:
    model = small_model()
    model.eval()
    src, tgt = torch.randint(0, 11, (B, S)), torch.randint(0, 13, (B, T))
    block_last = torch.zeros(T, S, dtype=torch.bool)
    block_last[:, -1] = True
    src_mask = torch.zeros(S, S, dtype=torch.bool)
    src_mask[:, -1] = True  # and no encoder position reads the last source token either
    src_mask[-1, -1] = False
    src2 = src.clone()
    src2[:, -1] = (src2[:, -1] + 1) % 11
    a = model(src, tgt, src_mask=src_mask, memory_mask=block_last)
    b = model(src2, tgt, src_mask=src_mask, memory_mask=block_last)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("how", ["tgt_mask", "tgt_is_causal"])
def test_seq2seq_future_target_tokens_do_not_change_earlier_logits(how: str) -> None:
    """Seed bug: the causal mask was inverted, so position t saw the future."""
    model = small_model()
    model.eval()
    src, tgt = torch.randint(0, 11, (B, S)), torch.randint(0, 13, (B, T))
    kw: dict[str, Any] = (
        {"tgt_mask": generate_square_subsequent_mask(T)} if how == "tgt_mask" else {"tgt_is_causal": True}
    )
    t = 2
    tgt2 = tgt.clone()
    tgt2[:, t + 1 :] = (tgt2[:, t + 1 :] + 5) % 13
    a, b = model(src, tgt, **kw), model(src, tgt2, **kw)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1])
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_seq2seq_bf16_autocast_with_padding_is_finite() -> None:
    model = small_model()
    src, tgt = torch.randint(0, 11, (B, S)), torch.randint(0, 13, (B, T))
    src_kpm = _kpm(B, S)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(
            src,
            tgt,
            tgt_mask=generate_square_subsequent_mask(T),
            src_key_padding_mask=src_kpm,
            memory_key_padding_mask=src_kpm,
            tgt_key_padding_mask=_kpm(B, T),
        )
    assert torch.isfinite(logits).all()
    logits.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_seq2seq_seq_first_layout_matches_batch_first() -> None:
    bf, sf = small_model(), small_model(batch_first=False)
    sf.load_state_dict(bf.state_dict())
    src, tgt = torch.randint(0, 11, (B, S)), torch.randint(0, 13, (B, T))
    out_sf = sf(src.t(), tgt.t(), tgt_is_causal=True)
    assert out_sf.shape == (T, B, 13)
    torch.testing.assert_close(out_sf.transpose(0, 1), bf(src, tgt, tgt_is_causal=True))


def test_seq2seq_bad_inputs_raise() -> None:
    model = small_model()
    with pytest.raises(ValueError, match=r"tgt: got shape \(3, 5\) with batch size 3, expected batch size 2"):
        model(torch.randint(0, 11, (B, S)), torch.randint(0, 13, (3, T)))
    with pytest.raises(ValueError, match=r"src: got shape \(2, 7, 1\), expected token ids \(batch, seq"):
        model(torch.randint(0, 11, (B, S, 1)), torch.randint(0, 13, (B, T)))
    with pytest.raises(ValueError, match=r"x: got shape \(2, 40, 16\) with sequence length 40.*max_len=32"):
        model(torch.randint(0, 11, (B, 40)), torch.randint(0, 13, (B, T)))


def test_public_names_resolve_from_dlcore() -> None:
    for name in (
        "MultiHeadAttention",
        "SinusoidalPositionalEncoding",
        "TransformerEncoderLayer",
        "TransformerEncoder",
        "TransformerDecoderLayer",
        "TransformerDecoder",
        "Transformer",
        "generate_square_subsequent_mask",
    ):
        assert getattr(dlcore, name).__module__.startswith("dlcore.layers.")
