"""The attention scenario's reference implementations compute what dlcore computes."""

import pytest
import torch

from bench.registry import BuildContext, get_scenario


def _model(impl: str, causal: bool) -> torch.nn.Module:
    spec = get_scenario("attention")
    cfg = spec.make_config("tiny", impl=impl, causal=causal)
    return spec.build(cfg, BuildContext(device="cpu", mode="forward")).model


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("impl", ["sdpa", "torch"])
def test_reference_equals_dlcore_with_same_weights(impl: str, causal: bool) -> None:
    ours, ref = _model("dlcore", causal), _model(impl, causal)
    if impl == "sdpa":
        ref.attn.in_proj.weight.data.copy_(ours.attn.in_proj_weight)
        ref.attn.in_proj.bias.data.copy_(ours.attn.in_proj_bias)
        ref.attn.out_proj.load_state_dict(ours.attn.out_proj.state_dict())
    else:
        ref.attn.load_state_dict(ours.attn.state_dict())
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        torch.testing.assert_close(ref(x), ours(x))


def test_impl_validated() -> None:
    spec = get_scenario("attention")
    with pytest.raises(ValueError, match="impl"):
        spec.make_config("tiny", impl="flash")
    with pytest.raises(ValueError, match="attn_impl"):
        spec.make_config("tiny", impl="sdpa", attn_impl="math")
