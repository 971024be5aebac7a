"""A tiny untrained checkpoint for daemon tests: real Stream arithmetic, milliseconds to load."""

from __future__ import annotations

from pathlib import Path

import torch

from ripieno.model.network import ModelConfig, NoteLSTM
from ripieno.model import network


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return network.save(path, NoteLSTM(ModelConfig(hidden=16, layers=1, head_hidden=16)), {"note": "tiny test model"})
