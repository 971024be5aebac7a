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

from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .encoding import N_PITCH, N_ROLE, N_TARGETS, Encoding
from .online import OnlineConfig

State = tuple[Tensor, Tensor]
HEADS = ("step", "duration", "velocity")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a NoteLSTM; JSON-able (`to_dict`/`from_dict`), written into every checkpoint."""

    hidden: int = 256
    layers: int = 2
    pitch_embed: int = 64  # width of the pitch embedding (and of the tied output projection)
    embed: int = 16  # width of every other column's embedding
    cond_embed: int = 32  # pitch embedding the timing/velocity heads condition on
    head_hidden: int = 128  # shared hidden layer of the timing/velocity heads
    dropout: float = 0.1
    tie_weights: bool = False  # pitch output layer shares the pitch input embedding
    encoding: Encoding = field(default_factory=Encoding)
    online: OnlineConfig = field(default_factory=OnlineConfig)  # how a Stream learns the piece (no weights)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("encoding", "online")}
        d["encoding"] = self.encoding.to_dict()
        d["online"] = self.online.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        extra = set(d) - known
        if extra:
            raise ValueError(f"unknown model config key(s): {', '.join(sorted(extra))}")
        d = dict(d)
        if "encoding" in d:
            d["encoding"] = Encoding.from_dict(d["encoding"])
        if "online" in d:
            d["online"] = OnlineConfig.from_dict(d["online"])
        return cls(**d)


class NoteLSTM(nn.Module):
    """Embeddings -> LSTM -> heads. See module docstring; `forward` returns raw LSTM outputs."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ModelConfig()
        vocab = cfg.encoding.vocab_sizes
        widths = [cfg.pitch_embed] + [cfg.embed] * (len(vocab) - 1)
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

