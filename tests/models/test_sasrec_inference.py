"""SASRec's inference shortcuts give the same user vectors as the full forward pass.

Serving and the updater's gate ask only for the last position (``tail=1``), an update only for the columns of
its new events (``tail``), and a batch without padding runs plain causal attention with no mask; each must equal
the general masked computation.
"""

from __future__ import annotations

import pytest
import torch

from liverec.models.sasrec import SASRecConfig, SASRecNetwork


def network(n_layers: int, n_heads: int = 2) -> SASRecNetwork:
    torch.manual_seed(0)
    return SASRecNetwork(50, SASRecConfig(dim=16, max_len=12, n_layers=n_layers, n_heads=n_heads)).eval()


@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("tail", [1, 3, 11, 12])
@pytest.mark.parametrize("padded", [True, False])
def test_the_tail_equals_the_last_columns_of_the_full_pass(n_layers: int, tail: int, padded: bool) -> None:
    """With padding (the masked path) and without (plain causal attention: the tail builds its own mask)."""
    net = network(n_layers)
    generator = torch.Generator().manual_seed(1)
    sequences = torch.randint(1, 51, (6, 12), generator=generator)
    if padded:
        sequences[1, :5] = 0  # left padding
        sequences[2, :11] = 0  # one item
        sequences[3, :] = 0  # empty history
    with torch.inference_mode():
        full = net(sequences)[:, -tail:]
        last = net(sequences, tail=tail)
    assert last.shape == (6, tail, 16)
    torch.testing.assert_close(last, full, atol=1e-6, rtol=1e-5)


def test_the_tails_gradients_are_the_full_passes_on_the_same_positions() -> None:
    """Training (dropout off, so both passes compute the same function): a loss on the last columns has the same
    gradient whether the final block computes every column or the tail alone."""
    net = network(2).train()
    for module in net.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    generator = torch.Generator().manual_seed(3)
    sequences = torch.randint(1, 51, (5, 12), generator=generator)
    sequences[0, :4] = 0
    weights = torch.randn(5, 4, 16, generator=generator)
    gradients = []
    for tail in (None, 4):
        net.zero_grad()
        hidden = net(sequences)[:, -4:] if tail is None else net(sequences, tail=tail)
        (hidden * weights).sum().backward()
        gradients.append({name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys()
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("tail", [None, 1])
def test_a_batch_without_padding_equals_the_same_rows_in_a_padded_batch(tail: int | None) -> None:
    """Rows of one length alone (no mask, plain causal attention) against the same rows beside a shorter one."""
    net = network(2)
    generator = torch.Generator().manual_seed(2)
    full_rows = torch.randint(1, 51, (4, 12), generator=generator)
    short = torch.randint(1, 51, (1, 12), generator=generator)
    short[0, :7] = 0
    with torch.inference_mode():
        alone = net(full_rows, tail=tail)
        beside = net(torch.cat([full_rows, short]), tail=tail)[:4]
    torch.testing.assert_close(alone, beside, atol=1e-6, rtol=1e-5)
