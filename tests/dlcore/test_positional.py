"""dlcore.SinusoidalPositionalEncoding: the formula, batch-first layout, max_len, dtype."""

from __future__ import annotations

import math

import pytest
import torch

from dlcore import SinusoidalPositionalEncoding


def _expected(pos: int, i: int, d_model: int) -> float:
    angle = pos / 10000 ** ((i - i % 2) / d_model)
    return math.sin(angle) if i % 2 == 0 else math.cos(angle)


@pytest.mark.parametrize("d_model", [8, 7])
def test_values_follow_the_paper_formula(d_model: int) -> None:
    pe = SinusoidalPositionalEncoding(d_model, max_len=50, dropout=0.0)
    out = pe(torch.zeros(1, 50, d_model, dtype=torch.float64))
    expected = torch.tensor(
        [[_expected(p, i, d_model) for i in range(d_model)] for p in range(50)], dtype=torch.float64
    )
    torch.testing.assert_close(out[0], expected, atol=1e-6, rtol=1e-6)  # table is stored in fp32


def test_batch_first_every_batch_item_gets_the_same_positions() -> None:
    """Seed bug: the encoding was sequence-first; a (B, L, D) input was indexed by batch."""
    b, seq, d = 3, 5, 8  # B != L so a layout mix-up cannot hide
    pe = SinusoidalPositionalEncoding(d, max_len=20, dropout=0.0)
    x = torch.randn(b, seq, d)
    out = pe(x)
    assert out.shape == (b, seq, d)
    delta = out - x  # (B, L, D): the encoding alone
    for i in range(b):
        torch.testing.assert_close(delta[i], delta[0])  # same for every batch item
    assert not torch.allclose(delta[:, 0], delta[:, 1])  # but different along the sequence
    torch.testing.assert_close(delta[0], pe.pe[:seq])


def test_sequence_longer_than_max_len_raises() -> None:
    pe = SinusoidalPositionalEncoding(8, max_len=10)
    pe(torch.zeros(2, 10, 8))  # exactly max_len is fine
    with pytest.raises(ValueError, match=r"x: got shape \(2, 11, 8\) with sequence length 11.*max_len=10"):
        pe(torch.zeros(2, 11, 8))


@pytest.mark.parametrize("shape", [(2, 5, 6), (5, 8)])
def test_wrong_input_shape_raises(shape: tuple[int, ...]) -> None:
    pe = SinusoidalPositionalEncoding(8, max_len=10)
    with pytest.raises(ValueError, match=r"x: got shape .* expected \(batch, seq_len, d_model\).*d_model=8"):
        pe(torch.zeros(*shape))


def test_bad_constructor_arguments_raise() -> None:
    with pytest.raises(ValueError, match="d_model: got 0"):
        SinusoidalPositionalEncoding(0)
    with pytest.raises(ValueError, match="max_len: got -1"):
        SinusoidalPositionalEncoding(8, max_len=-1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_keeps_the_input_dtype(dtype: torch.dtype) -> None:
    pe = SinusoidalPositionalEncoding(8, max_len=10, dropout=0.0)
    assert pe(torch.zeros(2, 4, 8, dtype=dtype)).dtype == dtype


def test_dropout_only_in_training_and_table_not_in_state_dict() -> None:
    pe = SinusoidalPositionalEncoding(16, max_len=10, dropout=0.5)
    x = torch.ones(4, 10, 16)
    assert (pe(x) == 0).any()
    pe.eval()
    torch.testing.assert_close(pe(x), x + pe.pe)
    assert "pe" not in pe.state_dict()  # derived from (max_len, d_model); loads into any max_len
    SinusoidalPositionalEncoding(16, max_len=100).load_state_dict(pe.state_dict())


def test_gradient_flows_to_the_input() -> None:
    pe = SinusoidalPositionalEncoding(8, max_len=10, dropout=0.0)
    x = torch.randn(2, 4, 8, requires_grad=True)
    pe(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))
