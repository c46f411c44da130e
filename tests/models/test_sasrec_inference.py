"""SASRec's inference shortcuts give the same user vectors as the full forward pass.

Serving and the updater's gate ask only for the last position (``last_only``), and a batch without
padding runs plain causal attention with no mask; both must equal the general masked computation.
"""

from __future__ import annotations

import pytest
import torch

from liverec.models.sasrec import SASRecConfig, SASRecNetwork


def network(n_layers: int, n_heads: int = 2) -> SASRecNetwork:
    torch.manual_seed(0)
    return SASRecNetwork(50, SASRecConfig(dim=16, max_len=12, n_layers=n_layers, n_heads=n_heads)).eval()


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_last_only_equals_the_last_position_of_the_full_pass(n_layers: int) -> None:
    net = network(n_layers)
    generator = torch.Generator().manual_seed(1)
    sequences = torch.randint(1, 51, (6, 12), generator=generator)
    sequences[1, :5] = 0  # left padding
    sequences[2, :11] = 0  # one item
    sequences[3, :] = 0  # empty history
    with torch.inference_mode():
        full = net(sequences)[:, -1]
        last = net(sequences, last_only=True)
    assert last.shape == (6, 1, 16)
    torch.testing.assert_close(last[:, 0], full, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("last_only", [False, True])
def test_a_batch_without_padding_equals_the_same_rows_in_a_padded_batch(last_only: bool) -> None:
    """Rows of one length alone (no mask, plain causal attention) against the same rows beside a shorter one."""
    net = network(2)
    generator = torch.Generator().manual_seed(2)
    full_rows = torch.randint(1, 51, (4, 12), generator=generator)
    short = torch.randint(1, 51, (1, 12), generator=generator)
    short[0, :7] = 0
    with torch.inference_mode():
        alone = net(full_rows, last_only=last_only)
        beside = net(torch.cat([full_rows, short]), last_only=last_only)[:4]
    torch.testing.assert_close(alone, beside, atol=1e-6, rtol=1e-5)
