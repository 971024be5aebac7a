"""The note LSTM: embedded event tokens -> stacked LSTM -> separate heads.

The pitch head is a 128-way classifier (optionally tied to the pitch embedding) with one
readout per part: the next note's role is given, not predicted (the engine knows whether it
asks for the lead's next note or for the accompaniment's), so "what does the bass play under
this melody note" and "where does the melody go" are separate distributions. Step, duration
and velocity are categorical over the encoding's bins so they can be sampled; they condition
on the pitch of the event they describe (teacher-forced in training, sampled first at play
time) through a small shared layer, so e.g. a bass note can get a longer duration.

The recurrent state is always explicit: `forward` takes and returns (h, c), the module
stores none, so one model serves many streams.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .checkpoint import Checkpoint, CheckpointError
from .config import HEADS, ModelConfig, embedding_widths
from .encoding import N_PITCH, N_ROLE, N_TARGETS

__all__ = ["HEADS", "ModelConfig", "NoteLSTM", "State", "checkpoint_of", "model_of", "numpy_weights", "save"]

State = tuple[Tensor, Tensor]


class NoteLSTM(nn.Module):
    """Embeddings -> LSTM -> heads. See module docstring; `forward` returns raw LSTM outputs."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ModelConfig()
        vocab = cfg.encoding.vocab_sizes
        widths = embedding_widths(cfg)
        self.embeddings = nn.ModuleList(nn.Embedding(n, w) for n, w in zip(vocab, widths))
        self.lstm = nn.LSTM(sum(widths), cfg.hidden, cfg.layers, batch_first=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.tie_weights:
            self.pitch_proj = nn.Linear(cfg.hidden, cfg.pitch_embed * N_ROLE)
            self.pitch_bias = nn.Parameter(torch.zeros(N_ROLE, N_PITCH))
        else:
            self.pitch_out = nn.Linear(cfg.hidden, N_PITCH * N_ROLE)
        self.cond = nn.Embedding(N_PITCH, cfg.cond_embed)
        self.head_in = nn.Linear(cfg.hidden + cfg.cond_embed, cfg.head_hidden)
        sizes = dict(zip(cfg.encoding.columns, vocab))
        self.heads = nn.ModuleDict({name: nn.Linear(cfg.head_hidden, sizes[name]) for name in HEADS})

    @property
    def n_columns(self) -> int:
        return len(self.embeddings)

    def embed(self, tokens: Tensor) -> Tensor:
        """(..., K) int64 tokens -> (..., E) concatenated embeddings."""
        if tokens.shape[-1] != self.n_columns:
            raise ValueError(f"expected {self.n_columns} token columns {self.config.encoding.columns}, got {tokens.shape[-1]}")
        return torch.cat([emb(tokens[..., i]) for i, emb in enumerate(self.embeddings)], dim=-1)

    def forward(self, x: Tensor | PackedSequence, state: State | None = None) -> tuple[Tensor | PackedSequence, State]:
        """x: (B,T,K) tokens or a PackedSequence of (sum T, K) tokens -> (LSTM outputs, (h, c))."""
        if isinstance(x, PackedSequence):
            inp = PackedSequence(self.embed(x.data), x.batch_sizes, x.sorted_indices, x.unsorted_indices)
        else:
            inp = self.embed(x)
        out, (h, c) = self.lstm(inp, state)
        return out, (h, c)

    def initial_state(self, batch: int = 1, device: torch.device | str = "cpu") -> State:
        z = torch.zeros(self.config.layers, batch, self.config.hidden, device=device)
        return z, z.clone()

    def pitch_logits(self, hidden_rows: Tensor, role: Tensor | int = 0) -> Tensor:
        """(N, H) -> (N, 128) unnormalised log-probabilities of the next pitch, for a next note of
        `role` (an int for every row, or (N,) int64: each row its own)."""
        n = hidden_rows.shape[0]
        if self.config.tie_weights:
            proj = self.pitch_proj(hidden_rows).view(n, N_ROLE, self.config.pitch_embed)
            all_roles = proj @ self.embeddings[0].weight.t() + self.pitch_bias
        else:
            all_roles = self.pitch_out(hidden_rows).view(n, N_ROLE, N_PITCH)
        if isinstance(role, int):
            return all_roles[:, role]
        return all_roles.gather(1, role.view(n, 1, 1).expand(n, 1, N_PITCH))[:, 0]

    def head_logits(self, hidden_rows: Tensor, pitch: Tensor) -> dict[str, Tensor]:
        """Step/duration/velocity logits for next events whose pitch is `pitch` (N,) given hidden (N, H)."""
        z = torch.relu(self.head_in(torch.cat([hidden_rows, self.cond(pitch)], dim=-1)))
        return {name: head(z) for name, head in self.heads.items()}

    def loss(self, hidden_rows: Tensor, target_rows: Tensor) -> dict[str, Tensor]:
        """Mean NLL (nats) per head over N rows: hidden_rows (N, H) predict target_rows (N, K>=4).

        Row-wise only, so packed and padded batches give the same losses. Output dropout is
        applied here (train mode), between the LSTM and the heads.
        """
        h = self.drop(hidden_rows)
        tgt = target_rows[:, :N_TARGETS]
        out = {"pitch": F.cross_entropy(self.pitch_logits(h, target_rows[:, N_TARGETS].clamp(0, N_ROLE - 1)), tgt[:, 0])}
        logits = self.head_logits(h, tgt[:, 0])
        for i, name in enumerate(HEADS, start=1):
            out[name] = F.cross_entropy(logits[name], tgt[:, i])
        out["total"] = out["pitch"] + out["step"] + out["duration"] + out["velocity"]
        return out

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())



# ---------------------------------------------------------------- torch <-> the checkpoint file


def numpy_weights(model: NoteLSTM) -> dict[str, np.ndarray]:
    """The state dict as float32 numpy arrays: what a checkpoint file stores."""
    return {k: np.ascontiguousarray(v.detach().cpu().to(torch.float32).numpy()) for k, v in model.state_dict().items()}


def checkpoint_of(model: NoteLSTM, meta: dict[str, Any] | None = None, tables: dict[str, np.ndarray] | None = None) -> Checkpoint:
    """An in-memory Checkpoint of a torch model (tests, benches, eval of a model being trained)."""
    ck = Checkpoint(config=model.config, weights=numpy_weights(model), meta=dict(meta or {}), tables=dict(tables or {}))
    ck._cache[f"torch:{next(model.parameters()).device}"] = model
    return ck


def save(path: str | Path, model: NoteLSTM, meta: dict[str, Any] | None = None, tables: dict[str, np.ndarray] | None = None) -> Path:
    """Write a torch model as a checkpoint file (`checkpoint.save` on its numpy weights)."""
    from . import checkpoint

    return checkpoint.save(path, model.config, numpy_weights(model), meta, tables)


def model_of(ck: Checkpoint, device: str | torch.device = "cpu") -> NoteLSTM:
    """The checkpoint's weights as a torch NoteLSTM in eval mode (built once per checkpoint and device)."""
    key = f"torch:{torch.device(device)}"
    if key not in ck._cache:
        model = NoteLSTM(ck.config)
        try:
            model.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in ck.weights.items()})
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint {ck.path}: weights do not fit the config ({str(e).splitlines()[0]})") from None
        ck._cache[key] = model.to(device).eval()
    return ck._cache[key]
