"""One comparison for every parity test: shapes equal, and the largest difference within ``rel`` times the
reference's largest magnitude; a failure reports the max and mean differences and where the max is."""

from __future__ import annotations

import torch


def assert_close(ours, ref, what: str, rel: float = 1e-5, floor: float = 0.0) -> float:
    """Assert ``max|ours - ref| <= rel * max(max|ref|, floor)``; returns that max difference over max|ref|.

    ``floor`` keeps the bound from shrinking to nothing for references near zero (1.0: an absolute bound of
    ``rel``). Tensors of any shape and dtype are compared in float64 on the CPU.
    """
    ours = torch.as_tensor(ours).detach().to("cpu", torch.float64)
    ref = torch.as_tensor(ref).detach().to("cpu", torch.float64)
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != reference {tuple(ref.shape)}"
    if ref.numel() == 0:
        return 0.0
    diff = (ours - ref).abs()
    scale = ref.abs().max().item()
    worst = diff.max().item()
    bound = rel * max(scale, floor)
    if not worst <= bound:  # also catches NaN
        where = tuple(int(i) for i in torch.unravel_index(diff.nan_to_num(float("inf")).argmax(), diff.shape))
        raise AssertionError(
            f"{what}: max|diff| {worst:.3g} at {where} > {rel:g} x {max(scale, floor):.3g} "
            f"(mean|diff| {diff.mean().item():.3g}, reference max {scale:.3g})"
        )
    return worst / scale if scale else worst
