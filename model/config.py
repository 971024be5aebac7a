"""The network's architecture as data: `ModelConfig` and the tensor shapes it implies.

Torch-free on purpose: the daemon reads a checkpoint's header, checks every tensor's shape
against `expected_shapes` before one byte of weights is allocated, and steps the network in
numpy (`NumpyLSTM`), so a musician's box never imports torch. `network.NoteLSTM` builds the
same tensors (a test holds the two to each other).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from .encoding import N_PITCH, N_ROLE, Encoding, unknown_keys
from .online import OnlineConfig

HEADS = ("step", "duration", "velocity")

# Bounds a header must keep before anything is allocated: generous for real models (the
# bundled one is 256 x 2), tight enough that a hostile 4 KB file cannot ask for gigabytes.
_INT_BOUNDS = {"hidden": (1, 2048), "layers": (1, 8), "pitch_embed": (1, 1024), "embed": (1, 1024), "cond_embed": (1, 1024), "head_hidden": (1, 2048)}
MAX_PARAMETERS = 64_000_000


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

    def __post_init__(self) -> None:
        for name, (lo, hi) in _INT_BOUNDS.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"{name} must be a whole number in {lo}..{hi}, not {v!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), not {self.dropout!r}")
        if not isinstance(self.tie_weights, bool):
            raise ValueError(f"tie_weights must be true or false, not {self.tie_weights!r}")
        if not isinstance(self.encoding, Encoding) or not isinstance(self.online, OnlineConfig):
            raise ValueError("encoding and online must be their own config objects")
        n = sum(_numel(s) for s in expected_shapes(self).values())
        if n > MAX_PARAMETERS:
            raise ValueError(f"{n:,} parameters is more than this ripieno loads ({MAX_PARAMETERS:,})")

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("encoding", "online")}
        d["encoding"] = self.encoding.to_dict()
        d["online"] = self.online.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        if not isinstance(d, dict):
            raise ValueError(f"model config must be a table, not {type(d).__name__}")
        extra = unknown_keys(cls, d)
        if extra:
            raise ValueError(f"unknown model config key(s): {extra}")
        d = dict(d)
        if "encoding" in d:
            d["encoding"] = Encoding.from_dict(d["encoding"])
        if "online" in d:
            d["online"] = OnlineConfig.from_dict(d["online"])
        return cls(**d)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def embedding_widths(cfg: ModelConfig) -> list[int]:
    """Width of each token column's embedding, in column order (the pitch first)."""
    return [cfg.pitch_embed] + [cfg.embed] * (len(cfg.encoding.vocab_sizes) - 1)


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every weight a NoteLSTM of `cfg` has, by its state_dict name: the checkpoint must match exactly."""
    H, G = cfg.hidden, 4 * cfg.hidden
    vocab = cfg.encoding.vocab_sizes
    widths = embedding_widths(cfg)
    shapes: dict[str, tuple[int, ...]] = {f"embeddings.{i}.weight": (n, w) for i, (n, w) in enumerate(zip(vocab, widths))}
    for k in range(cfg.layers):
        shapes[f"lstm.weight_ih_l{k}"] = (G, sum(widths) if k == 0 else H)
        shapes[f"lstm.weight_hh_l{k}"] = (G, H)
        shapes[f"lstm.bias_ih_l{k}"] = (G,)
        shapes[f"lstm.bias_hh_l{k}"] = (G,)
    if cfg.tie_weights:
        shapes["pitch_proj.weight"] = (cfg.pitch_embed * N_ROLE, H)
        shapes["pitch_proj.bias"] = (cfg.pitch_embed * N_ROLE,)
        shapes["pitch_bias"] = (N_ROLE, N_PITCH)
    else:
        shapes["pitch_out.weight"] = (N_PITCH * N_ROLE, H)
        shapes["pitch_out.bias"] = (N_PITCH * N_ROLE,)
    shapes["cond.weight"] = (N_PITCH, cfg.cond_embed)
    shapes["head_in.weight"] = (cfg.head_hidden, H + cfg.cond_embed)
    shapes["head_in.bias"] = (cfg.head_hidden,)
    sizes = dict(zip(cfg.encoding.columns, vocab))
    for name in HEADS:
        shapes[f"heads.{name}.weight"] = (sizes[name], cfg.head_hidden)
        shapes[f"heads.{name}.bias"] = (sizes[name],)
    return shapes
