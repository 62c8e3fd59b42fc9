"""torch factories used by the CLI tests (`module:factory` sources)."""

from __future__ import annotations

import torch


def tiny_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)
    ).eval()
