"""dlcore.MultiHeadAttention against torch.nn.MultiheadAttention: outputs, gradients, masks, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import dlcore.layers.attention as attention_mod
from dlcore import MultiHeadAttention, generate_square_subsequent_mask

E, H = 16, 4


def make_pair(
    embed_dim: int = E,
    num_heads: int = H,
    dtype: torch.dtype = torch.float64,
    bias: bool = True,
    batch_first: bool = True,
    attn_impl: str = "sdpa",
    seed: int = 0,
) -> tuple[nn.MultiheadAttention, MultiHeadAttention]:
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=batch_first, dtype=dtype)
    with torch.no_grad():  # non-zero biases so that bias gradients and offsets are exercised
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = MultiHeadAttention(
        embed_dim, num_heads, bias=bias, batch_first=batch_first, dtype=dtype, attn_impl=attn_impl
    )  # type: ignore[arg-type]
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def run_both(
    ref: nn.Module,
    ours: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    kwargs: dict[str, Any],
    call: Callable[..., Any] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
) -> None:
    """Same inputs through both modules: outputs, input gradients and parameter gradients agree."""
    call = call or (lambda m, *xs, **kw: m(*xs, **kw))
    tol = {} if atol is None else {"atol": atol, "rtol": rtol}
    results = []
    for m in (ref, ours):
        xs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
        # keep identity (self-attention: query is key is value) as in the caller's inputs
        ids = {id(x): i for i, x in reversed(list(enumerate(inputs)))}
        xs = [xs[ids[id(x)]] for x in inputs]
        m.zero_grad(set_to_none=True)
        out = call(m, *xs, **kwargs)
        out_t = out[0] if isinstance(out, tuple) else out
        torch.manual_seed(123)
        out_t.backward(torch.randn(out_t.shape, dtype=out_t.dtype))  # not randn_like: strides differ
        grads = {n: p.grad for n, p in m.named_parameters()}
        uniq = list({id(x): x for x in xs}.values())
        results.append((out, [x.grad for x in uniq], grads))
    (o_ref, gx_ref, gp_ref), (o_ours, gx_ours, gp_ours) = results
    if isinstance(o_ref, tuple):
        torch.testing.assert_close(o_ours[0], o_ref[0], **tol)
        if o_ref[1] is not None:
            torch.testing.assert_close(o_ours[1], o_ref[1], **tol)
        else:
            assert o_ours[1] is None
    else:
        torch.testing.assert_close(o_ours, o_ref, **tol)
    for a, b in zip(gx_ours, gx_ref, strict=True):
        torch.testing.assert_close(a, b, **tol)
    assert gp_ours.keys() == gp_ref.keys()
    for name in gp_ref:
        torch.testing.assert_close(gp_ours[name], gp_ref[name], **tol, msg=lambda m, n=name: f"{n}: {m}")


def randn(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype)


def _kpm(b: int, s: int) -> torch.Tensor:
    m = torch.rand(b, s) < 0.4
    m[:, 0] = False  # every row keeps at least one key
    return m


def _bool_mask(*shape: int) -> torch.Tensor:
    m = torch.rand(*shape) < 0.4
    m[..., 0] = False
    return m


def _float_mask(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    m = torch.randn(*shape, dtype=dtype)
    return m.masked_fill(_bool_mask(*shape), float("-inf"))


# (name, builder(dtype) -> (inputs, kwargs))
B, L, S = 3, 5, 7


def _cases() -> dict[str, Callable[[torch.dtype], tuple[tuple[torch.Tensor, ...], dict[str, Any]]]]:
    def self_attn(dt: torch.dtype) -> Any:
        x = randn(B, L, E, dtype=dt)
        return (x, x, x), {}

    def cross(dt: torch.dtype) -> Any:
        mem = randn(B, S, E, dtype=dt)
        return (randn(B, L, E, dtype=dt), mem, mem), {}

    def cross_separate_kv(dt: torch.dtype) -> Any:
        return (randn(B, L, E, dtype=dt), randn(B, S, E, dtype=dt), randn(B, S, E, dtype=dt)), {}

    def kpm_bool(dt: torch.dtype) -> Any:
        mem = randn(B, S, E, dtype=dt)
        return (randn(B, L, E, dtype=dt), mem, mem), {"key_padding_mask": _kpm(B, S)}

    def kpm_float(dt: torch.dtype) -> Any:
        x = randn(B, L, E, dtype=dt)
        return (x, x, x), {"key_padding_mask": _float_mask(B, L, dtype=dt)}

    def mask2d_bool(dt: torch.dtype) -> Any:
        mem = randn(B, S, E, dtype=dt)
        return (randn(B, L, E, dtype=dt), mem, mem), {"attn_mask": _bool_mask(L, S)}

    def mask2d_float(dt: torch.dtype) -> Any:
        mem = randn(B, S, E, dtype=dt)
        return (randn(B, L, E, dtype=dt), mem, mem), {"attn_mask": _float_mask(L, S, dtype=dt)}

    def mask3d_bool(dt: torch.dtype) -> Any:
        mem = randn(B, S, E, dtype=dt)
        return (randn(B, L, E, dtype=dt), mem, mem), {"attn_mask": _bool_mask(B * H, L, S)}

    def mask3d_float_and_kpm(dt: torch.dtype) -> Any:
        mem = randn(B, S, E, dtype=dt)
        return (randn(B, L, E, dtype=dt), mem, mem), {
            "attn_mask": _float_mask(B * H, L, S, dtype=dt),
            "key_padding_mask": _float_mask(B, S, dtype=dt),
        }

    def causal_hint(dt: torch.dtype) -> Any:
        x = randn(B, L, E, dtype=dt)
        return (x, x, x), {"attn_mask": generate_square_subsequent_mask(L, dtype=dt), "is_causal": True}

    def causal_bool_and_kpm(dt: torch.dtype) -> Any:
        x = randn(B, L, E, dtype=dt)
        causal = torch.ones(L, L, dtype=torch.bool).triu(1)
        return (x, x, x), {"attn_mask": causal, "key_padding_mask": _kpm(B, L)}

    return {
        f.__name__: f
        for f in (
            self_attn,
            cross,
            cross_separate_kv,
            kpm_bool,
            kpm_float,
            mask2d_bool,
            mask2d_float,
            mask3d_bool,
            mask3d_float_and_kpm,
            causal_hint,
            causal_bool_and_kpm,
        )
    }


CASES = _cases()


# ---------------------------------------------------------------------------------------- state_dict
@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_keys_match_torch_and_load_both_ways(bias: bool) -> None:
    ref, ours = make_pair(bias=bias)
    assert list(ours.state_dict()) == list(ref.state_dict())
    expected = (
        ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
        if bias
        else ["in_proj_weight", "out_proj.weight"]
    )
    assert list(ours.state_dict()) == expected
    fresh_ref = nn.MultiheadAttention(E, H, bias=bias, batch_first=True, dtype=torch.float64)
    fresh_ref.load_state_dict(ours.state_dict())  # ours -> torch
    for k, v in ours.state_dict().items():
        torch.testing.assert_close(fresh_ref.state_dict()[k], v)


def test_default_init_matches_torch_scheme() -> None:
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(E, H, batch_first=True)
    torch.manual_seed(0)
    ours = MultiHeadAttention(E, H)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v)


# ---------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("impl", ["sdpa", "math"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_parity_with_torch_outputs_and_grads(case: str, impl: str, dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    ref, ours = make_pair(dtype=dtype, attn_impl=impl)
    inputs, kwargs = CASES[case](dtype)
    run_both(ref, ours, inputs, {"need_weights": False, **kwargs})


@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("case", ["cross", "kpm_bool", "mask3d_float_and_kpm", "causal_bool_and_kpm"])
def test_need_weights_returns_torch_weights(case: str, average: bool) -> None:
    torch.manual_seed(2)
    ref, ours = make_pair()
    inputs, kwargs = CASES[case](torch.float64)
    run_both(ref, ours, inputs, {"need_weights": True, "average_attn_weights": average, **kwargs})
    _, w = ours(*inputs, need_weights=True, average_attn_weights=average, **kwargs)
    assert w.shape == ((B, L, inputs[1].size(1)) if average else (B, H, L, inputs[1].size(1)))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_parity_train_and_eval_modes(mode: str) -> None:
    ref, ours = make_pair(dtype=torch.float32)
    getattr(ref, mode)()
    getattr(ours, mode)()
    inputs, kwargs = CASES["kpm_bool"](torch.float32)
    run_both(ref, ours, inputs, {"need_weights": False, **kwargs})


def test_eval_no_grad_matches_torch_native_fast_path() -> None:
    ref, ours = make_pair(dtype=torch.float32)
    ref.eval()
    ours.eval()
    x = randn(B, L, E, dtype=torch.float32)
    kpm = _kpm(B, L)
    with torch.no_grad():
        a = ref(x, x, x, key_padding_mask=kpm, need_weights=False)[0]  # torch._native_multi_head_attention
        b = ours(x, x, x, key_padding_mask=kpm, need_weights=False)[0]
    torch.testing.assert_close(b, a)


@pytest.mark.parametrize("batch_first", [True, False])
def test_layouts_seq_first_and_unbatched(batch_first: bool) -> None:
    ref, ours = make_pair(batch_first=batch_first)
    q = randn(B, L, E) if batch_first else randn(L, B, E)
    kv = randn(B, S, E) if batch_first else randn(S, B, E)
    run_both(ref, ours, (q, kv, kv), {"need_weights": True, "key_padding_mask": _kpm(B, S)})
    run_both(
        ref,
        ours,
        (randn(L, E), randn(S, E), randn(S, E)),
        {"need_weights": True, "average_attn_weights": False, "attn_mask": _bool_mask(L, S)},
    )


def test_no_bias_parity() -> None:
    ref, ours = make_pair(bias=False)
    inputs, kwargs = CASES["mask2d_float"](torch.float64)
    run_both(ref, ours, inputs, {"need_weights": False, **kwargs})


@pytest.mark.parametrize("case", ["self_attn", "cross_separate_kv", "mask3d_float_and_kpm", "causal_hint"])
def test_fast_path_equals_math_path(case: str) -> None:
    torch.manual_seed(3)
    _, fast = make_pair(attn_impl="sdpa")
    _, math_ = make_pair(attn_impl="math")
    inputs, kwargs = CASES[case](torch.float64)
    run_both(fast, math_, inputs, {"need_weights": False, **kwargs})


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3),
    tgt_len=st.integers(1, 6),
    src_len=st.integers(1, 6),
    heads=st.sampled_from([1, 2, 4]),
    head_dim=st.integers(1, 4),
    mask_kind=st.sampled_from(["none", "bool2d", "float2d", "bool3d", "kpm", "both"]),
    impl=st.sampled_from(["sdpa", "math"]),
    need_weights=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_parity_random_shapes_and_masks(
    b: int,
    tgt_len: int,
    src_len: int,
    heads: int,
    head_dim: int,
    mask_kind: str,
    impl: str,
    need_weights: bool,
    seed: int,
) -> None:
    torch.manual_seed(seed)
    e = heads * head_dim
    ref, ours = make_pair(embed_dim=e, num_heads=heads, attn_impl=impl, seed=seed)
    q, kv = randn(b, tgt_len, e), randn(b, src_len, e)
    kwargs: dict[str, Any] = {"need_weights": need_weights}
    if mask_kind == "bool2d":
        kwargs["attn_mask"] = _bool_mask(tgt_len, src_len)
    elif mask_kind == "float2d":
        kwargs["attn_mask"] = _float_mask(tgt_len, src_len, dtype=torch.float64)
    elif mask_kind == "bool3d":
        kwargs["attn_mask"] = _bool_mask(b * heads, tgt_len, src_len)
    elif mask_kind == "kpm":
        kwargs["key_padding_mask"] = _kpm(b, src_len)
    elif mask_kind == "both":
        kwargs["attn_mask"] = _float_mask(tgt_len, src_len, dtype=torch.float64)
        kwargs["key_padding_mask"] = _float_mask(b, src_len, dtype=torch.float64)
    run_both(ref, ours, (q, kv, kv), kwargs)


# ---------------------------------------------------------------------------------------- seed regressions
def test_cross_attention_with_different_lengths_does_not_crash() -> None:
    """Seed bug: K and V were reshaped with the query's length."""
    mha = MultiHeadAttention(E, H)
    out, w = mha(
        randn(2, 3, E, dtype=torch.float32),
        randn(2, 11, E, dtype=torch.float32),
        randn(2, 11, E, dtype=torch.float32),
        need_weights=True,
    )
    assert out.shape == (2, 3, E)
    assert w is not None and w.shape == (2, 3, 11)


@pytest.mark.parametrize("impl", ["sdpa", "math"])
@pytest.mark.parametrize("how", ["float_mask", "bool_mask", "is_causal", "hint"])
def test_causal_mask_blocks_the_future(impl: str, how: str) -> None:
    """Seed bug: the float causal mask (0 allowed, -inf masked) was read as "0 = masked", inverted."""
    _, mha = make_pair(attn_impl=impl)
    kw: dict[str, Any] = {}
    if how == "float_mask":
        kw["attn_mask"] = generate_square_subsequent_mask(L, dtype=torch.float64)
    elif how == "bool_mask":
        kw["attn_mask"] = torch.ones(L, L, dtype=torch.bool).triu(1)
    elif how == "is_causal":
        kw["is_causal"] = True
    else:
        kw["attn_mask"], kw["is_causal"] = generate_square_subsequent_mask(L, dtype=torch.float64), True
    x = randn(B, L, E)
    y = x.clone()
    t = 2
    y[:, t + 1 :] += 10 * torch.randn_like(y[:, t + 1 :])  # perturb only the future of position t
    out_x, _ = mha(x, x, x, **kw)
    out_y, _ = mha(y, y, y, **kw)
    torch.testing.assert_close(out_y[:, : t + 1], out_x[:, : t + 1])
    assert not torch.allclose(out_y[:, t + 1 :], out_x[:, t + 1 :])
    # and the past does influence the present (a mask blocking everything would also pass above)
    z = x.clone()
    z[:, 0] += 1.0
    assert not torch.allclose(mha(z, z, z, **kw)[0][:, t], out_x[:, t])


def test_is_causal_without_mask_equals_explicit_mask_cross_lengths() -> None:
    _, mha = make_pair()
    q, kv = randn(B, L, E), randn(B, S, E)
    explicit = torch.ones(L, S, dtype=torch.bool).tril().logical_not()  # top-left aligned, like SDPA
    for impl in ("sdpa", "math"):
        mha.attn_impl = impl  # type: ignore[assignment]
        torch.testing.assert_close(mha(q, kv, kv, is_causal=True)[0], mha(q, kv, kv, attn_mask=explicit)[0])


@pytest.mark.parametrize("case", ["kpm_bool", "mask2d_bool", "causal_bool_and_kpm", "mask3d_float_and_kpm"])
def test_bf16_autocast_masks_do_not_overflow(case: str) -> None:
    """Seed bug: masked_fill(-1e9) overflows fp16; masks here are -inf in the compute dtype."""
    torch.manual_seed(4)
    _, ours = make_pair(dtype=torch.float32)
    inputs, kwargs = CASES[case](torch.float32)
    ref_out = ours(*inputs, **kwargs)[0]
    for impl in ("sdpa", "math"):
        ours.attn_impl = impl  # type: ignore[assignment]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, w = ours(*inputs, need_weights=impl == "math", **kwargs)
        assert out.dtype == torch.bfloat16
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), ref_out, atol=0.1, rtol=0.05)
        if w is not None:
            assert torch.isfinite(w).all()
        out.float().sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in ours.parameters() if p.grad is not None)
        ours.zero_grad(set_to_none=True)


@pytest.mark.parametrize("mask_kind", ["bool", "float_min"])
def test_fp16_math_path_masks_stay_finite(mask_kind: str) -> None:
    """Direct fp16 math path: no mask value overflows (a float32 finfo.min mask becomes -inf, safely)."""
    torch.manual_seed(5)
    mha = MultiHeadAttention(E, H, dtype=torch.float16, attn_impl="math")
    x = torch.randn(B, L, E, dtype=torch.float16)
    kpm = _kpm(B, L)
    if mask_kind == "bool":
        attn_mask = torch.ones(L, L, dtype=torch.bool).triu(1)
    else:
        attn_mask = torch.zeros(L, L).masked_fill(
            torch.ones(L, L, dtype=torch.bool).triu(1), torch.finfo(torch.float32).min
        )
    out, w = mha(x, x, x, key_padding_mask=kpm, attn_mask=attn_mask, need_weights=True)
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all() and w is not None and torch.isfinite(w).all()


def test_fast_path_calls_sdpa_and_never_builds_the_score_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed bug: the full L×L score matrix was always materialised; the default path is fused SDPA."""
    calls: list[dict[str, Any]] = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(kwargs)
        return real_sdpa(*args, **kwargs)

    def no_math(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the math path must not run on the fast path")

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    monkeypatch.setattr(attention_mod, "scaled_dot_product_attention_math", no_math)
    mha = MultiHeadAttention(E, H)
    x = torch.randn(B, L, E)
    mha(x, x, x)
    mha(x, x, x, is_causal=True)
    assert len(calls) == 2
    assert calls[1]["is_causal"] is True and calls[1]["attn_mask"] is None  # causal without an L×L mask


def test_math_path_and_need_weights_do_not_call_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sdpa(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("sdpa must not run on the math path")

    monkeypatch.setattr(F, "scaled_dot_product_attention", no_sdpa)
    x = torch.randn(B, L, E)
    MultiHeadAttention(E, H, attn_impl="math")(x, x, x)
    MultiHeadAttention(E, H)(x, x, x, need_weights=True)


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_fully_masked_rows_give_zero_context_and_finite_grads(impl: str) -> None:
    """Documented: a row with no allowed key attends to nothing (as torch's SDPA path), never NaN."""
    ref, ours = make_pair(attn_impl=impl)
    x = randn(2, L, E)
    kpm = _kpm(2, L)
    kpm[1] = True  # batch item 1: every key padded
    out = ours(x, x, x, key_padding_mask=kpm)[0]
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1], ours.out_proj.bias.expand(L, E))  # zero context -> bias only
    torch.testing.assert_close(out, ref(x, x, x, key_padding_mask=kpm, need_weights=False)[0])
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in ours.parameters())
    _, w = ours(x, x, x, key_padding_mask=kpm, need_weights=True)
    assert w is not None and torch.isfinite(w).all() and (w[1] == 0).all()


def test_dropout_applies_in_training_only() -> None:
    mha = MultiHeadAttention(E, H, dropout=0.5)
    x = torch.randn(B, L, E)
    torch.manual_seed(0)
    a = mha(x, x, x)[0]
    b = mha(x, x, x)[0]
    assert not torch.allclose(a, b)
    mha.eval()
    torch.testing.assert_close(mha(x, x, x)[0], mha(x, x, x)[0])


# ---------------------------------------------------------------------------------------- bad input
def test_embed_dim_not_divisible_by_heads() -> None:
    with pytest.raises(ValueError, match=r"embed_dim.*embed_dim=10.*num_heads=4.*divisible"):
        MultiHeadAttention(10, 4)


def test_unknown_attn_impl() -> None:
    with pytest.raises(ValueError, match=r"attn_impl.*'flash'.*'sdpa' or 'math'"):
        MultiHeadAttention(E, H, attn_impl="flash")  # type: ignore[arg-type]
    mha = MultiHeadAttention(E, H)
    with pytest.raises(ValueError, match="attn_impl"):
        mha.attn_impl = "fast"  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (
            {"attn_mask": torch.zeros(L, L, dtype=torch.bool)},
            r"attn_mask: got shape \(5, 5\), expected \(tgt_len, src_len\) = \(5, 7\)",
        ),
        (
            {"attn_mask": torch.zeros(B, L, S, dtype=torch.bool)},
            r"attn_mask: got shape \(3, 5, 7\), expected \(batch \* num_heads, tgt_len, src_len\) "
            r"= \(12, 5, 7\)",
        ),
        ({"attn_mask": torch.zeros(1, 1, L, S)}, r"attn_mask: got shape \(1, 1, 5, 7\), expected 2-D"),
        (
            {"attn_mask": torch.zeros(L, S, dtype=torch.int64)},
            r"attn_mask: got dtype torch.int64, expected torch.bool or a floating-point dtype",
        ),
        (
            {"key_padding_mask": torch.zeros(B, L, dtype=torch.bool)},
            r"key_padding_mask: got shape \(3, 5\), expected \(batch, src_len\) = \(3, 7\)",
        ),
        (
            {"key_padding_mask": torch.zeros(B, S, dtype=torch.int32)},
            r"key_padding_mask: got dtype torch.int32, expected torch.bool",
        ),
    ],
)
def test_bad_masks_raise_value_error(kwargs: dict[str, Any], pattern: str) -> None:
    mha = MultiHeadAttention(E, H)
    mem = torch.randn(B, S, E)
    for impl in ("sdpa", "math"):
        mha.attn_impl = impl  # type: ignore[assignment]
        with pytest.raises(ValueError, match=pattern):
            mha(torch.randn(B, L, E), mem, mem, **kwargs)


def test_bad_shapes_raise_value_error() -> None:
    mha = MultiHeadAttention(E, H)
    q = torch.randn(B, L, E)
    with pytest.raises(ValueError, match=r"key: got shape \(2, 7, 16\) with batch size 2, expected .* 3"):
        mha(q, torch.randn(2, S, E), torch.randn(2, S, E))
    with pytest.raises(ValueError, match=r"query: got shape \(3, 5, 8\) with embedding dim 8, .*=16"):
        mha(torch.randn(B, L, 8), torch.randn(B, S, E), torch.randn(B, S, E))
    with pytest.raises(ValueError, match=r"value: got shape \(3, 7, 12\) with embedding dim 12"):
        mha(q, torch.randn(B, S, E), torch.randn(B, S, 12))
    with pytest.raises(ValueError, match=r"value: got shape \(3, 6, 16\), expected .* as key \(3, 7, 16\)"):
        mha(q, torch.randn(B, S, E), torch.randn(B, 6, E))
    with pytest.raises(ValueError, match=r"query: got shape \(16,\), expected 3-D"):
        mha(torch.randn(E), torch.randn(E), torch.randn(E))
    with pytest.raises(ValueError, match=r"key: got shape \(7, 16\), expected 3-D like query"):
        mha(q, torch.randn(S, E), torch.randn(S, E))
