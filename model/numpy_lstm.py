"""The NoteLSTM's arithmetic for one event at a time, in plain float32 numpy.

Laid out once from a checkpoint's weights (numpy arrays by state_dict name; no torch), read-only
afterwards and shared by every Stream of a checkpoint. Why not torch: for batch 1, seq 1 the framework overhead is larger than the maths
(nn.LSTM ~1 ms, LSTMCell ~0.24 ms vs ~70 us of matrix work on 2x256, measured in issue 4).

Folds done at export (exact up to float32 rounding):
- layer 0's input projection is applied to every embedding row in advance, so the input of
  layer 0 is a sum of K table rows instead of a (4H x E) matrix-vector product; the twelve
  one-bit lead columns are summed in advance too, six bits to a table of 64 rows;
- both LSTM biases are summed; layers >= 1 use one [W_ih | W_hh] product on [x; h];
- a tied pitch output (E @ proj) is folded into one (128 x H) matrix;
- the timing heads' pitch conditioning (cond embedding through the first head layer, plus its
  bias) becomes a (128 x head_hidden) table.
All per-step work writes into caller-owned buffers (`Buffers`), so a step allocates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import HEADS, ModelConfig
from .encoding import N_PITCH, N_ROLE


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


@dataclass
class Buffers:
    """Scratch space for one stream's step; one set per Stream (forks get their own)."""

    gates: np.ndarray  # (4H,)
    xh: np.ndarray  # (2H,) input + hidden of layers >= 1
    tmp: np.ndarray  # (H,)
    pitch_logits: np.ndarray  # (128,)
    head_z: np.ndarray  # (head_hidden,)
    head_logits: np.ndarray  # (sum of head sizes,)


class NumpyLSTM:
    """Weights of one NoteLSTM laid out for single-event steps."""

    def __init__(self, cfg: ModelConfig, weights: dict[str, np.ndarray]) -> None:
        """`weights`: the NoteLSTM state_dict as numpy arrays (a Checkpoint's `weights`)."""
        w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}  # folds in double, stored as float32
        self.layers, self.hidden = cfg.layers, cfg.hidden
        H = cfg.hidden
        w_ih0 = w["lstm.weight_ih_l0"]
        # layer-0 input projection folded into every embedding table: (V_i, 4H) per column
        self.tables: list[np.ndarray] = []
        off = 0
        for i in range(len(cfg.encoding.columns)):
            e = w[f"embeddings.{i}.weight"]
            self.tables.append(_f32(e @ w_ih0[:, off : off + e.shape[1]].T))
            off += e.shape[1]
        # the twelve one-bit lead columns become two tables of 64 rows (six bits each): two row
        # additions per step instead of twelve, the same sums
        cols = cfg.encoding.columns
        self.lead_at = cols.index("lead0") if "lead0" in cols else -1
        if self.lead_at >= 0:
            bits = self.tables[self.lead_at : self.lead_at + 12]
            m = np.arange(64)
            self.lead_tables = [_f32(sum(bits[h * 6 + k][(m >> k) & 1] for k in range(6))) for h in range(2)]
            self.tables = self.tables[: self.lead_at] + self.tables[self.lead_at + 12 :]
            self.lead_weights = (1 << np.arange(12)).astype(np.int64)
        self.table_cols = [i for i in range(len(cols)) if not (self.lead_at >= 0 and self.lead_at <= i < self.lead_at + 12)]
        self.bias = [_f32(w[f"lstm.bias_ih_l{k}"] + w[f"lstm.bias_hh_l{k}"]) for k in range(self.layers)]
        self.w_hh0 = _f32(w["lstm.weight_hh_l0"])  # (4H, H)
        self.w_cat = [_f32(np.concatenate([w[f"lstm.weight_ih_l{k}"], w[f"lstm.weight_hh_l{k}"]], axis=1)) for k in range(1, self.layers)]
        # activation as one tanh: sigmoid(x) = 0.5 * tanh(0.5 x) + 0.5 on the i, f, o gates
        self.pre = np.ones(4 * H, dtype=np.float32)
        self.pre[: 2 * H] = 0.5
        self.pre[3 * H :] = 0.5
        self.post_add = np.where(self.pre == 0.5, 0.5, 0.0).astype(np.float32)
        # pitch head: one (128 x H) readout per role of the next note
        if cfg.tie_weights:
            e = w["embeddings.0.weight"]
            pw = w["pitch_proj.weight"].reshape(N_ROLE, cfg.pitch_embed, H)
            pb = w["pitch_proj.bias"].reshape(N_ROLE, cfg.pitch_embed)
            self.w_pitch = [_f32(e @ pw[r]) for r in range(N_ROLE)]
            self.b_pitch = [_f32(e @ pb[r] + w["pitch_bias"][r]) for r in range(N_ROLE)]
        else:
            pw = w["pitch_out.weight"].reshape(N_ROLE, N_PITCH, H)
            pb = w["pitch_out.bias"].reshape(N_ROLE, N_PITCH)
            self.w_pitch = [_f32(pw[r]) for r in range(N_ROLE)]
            self.b_pitch = [_f32(pb[r]) for r in range(N_ROLE)]
        # timing/velocity heads conditioned on pitch
        w_in = w["head_in.weight"]
        self.w_head_h = _f32(w_in[:, :H])
        self.cond_table = _f32(w["cond.weight"] @ w_in[:, H:].T + w["head_in.bias"])
        self.w_heads = _f32(np.concatenate([w[f"heads.{n}.weight"] for n in HEADS], axis=0))
        self.b_heads = _f32(np.concatenate([w[f"heads.{n}.bias"] for n in HEADS]))
        sizes = [w[f"heads.{n}.bias"].shape[0] for n in HEADS]
        bounds = np.cumsum([0, *sizes])
        self.head_slices = {n: slice(int(bounds[i]), int(bounds[i + 1])) for i, n in enumerate(HEADS)}
        self.head_starts = bounds.astype(np.intp)  # segment boundaries, HEADS order
        self.head_hidden = self.w_head_h.shape[0]

    def buffers(self) -> Buffers:
        H = self.hidden
        return Buffers(
            gates=np.zeros(4 * H, np.float32),
            xh=np.zeros(2 * H, np.float32),
            tmp=np.zeros(H, np.float32),
            pitch_logits=np.zeros(N_PITCH, np.float32),
            head_z=np.zeros(self.head_hidden, np.float32),
            head_logits=np.zeros(len(self.b_heads), np.float32),
        )

    def zero_state(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((self.layers, self.hidden), np.float32), np.zeros((self.layers, self.hidden), np.float32)

    def _cell(self, gates: np.ndarray, c: np.ndarray, h: np.ndarray, tmp: np.ndarray) -> None:
        """gates (pre-activation, i f g o) -> c, h updated in place."""
        H = self.hidden
        np.multiply(gates, self.pre, out=gates)
        np.tanh(gates, out=gates)
        np.multiply(gates, self.pre, out=gates)
        np.add(gates, self.post_add, out=gates)
        i, f, g, o = gates[:H], gates[H : 2 * H], gates[2 * H : 3 * H], gates[3 * H :]
        np.multiply(c, f, out=c)
        np.multiply(i, g, out=tmp)
        np.add(c, tmp, out=c)
        np.tanh(c, out=tmp)
        np.multiply(o, tmp, out=h)

    def step(self, tokens: np.ndarray, h: np.ndarray, c: np.ndarray, buf: Buffers, lead_mask: int | None = None) -> None:
        """Advance (h, c) (each (layers, H), updated in place) by one event's tokens (K,).

        lead_mask: the twelve lead bits as one integer, when the caller has it (the incremental
        encoder does), so they are not read back out of the tokens."""
        gates, H = buf.gates, self.hidden
        np.dot(self.w_hh0, h[0], out=gates)
        gates += self.bias[0]
        if self.lead_at >= 0:
            a = self.lead_at
            mask = int(tokens[a : a + 12] @ self.lead_weights) if lead_mask is None else lead_mask
            gates += self.lead_tables[0][mask & 63]
            gates += self.lead_tables[1][mask >> 6]
        for table, i in zip(self.tables, self.table_cols):
            gates += table[tokens[i]]
        self._cell(gates, c[0], h[0], buf.tmp)
        xh = buf.xh
        for k in range(1, self.layers):
            xh[:H] = h[k - 1]
            xh[H:] = h[k]
            np.dot(self.w_cat[k - 1], xh, out=gates)
            gates += self.bias[k]
            self._cell(gates, c[k], h[k], buf.tmp)

    def pitch_logits(self, h_top: np.ndarray, buf: Buffers, role: int = 0) -> np.ndarray:
        """Logits of the next pitch for a next note of `role` (0 lead, 1 accompaniment)."""
        np.dot(self.w_pitch[role], h_top, out=buf.pitch_logits)
        buf.pitch_logits += self.b_pitch[role]
        return buf.pitch_logits

    def head_logits(self, h_top: np.ndarray, pitch: int, buf: Buffers) -> np.ndarray:
        """Concatenated step/duration/velocity logits (slice with `head_slices`) for a next note of `pitch`."""
        z = buf.head_z
        np.dot(self.w_head_h, h_top, out=z)
        z += self.cond_table[pitch]
        np.maximum(z, 0.0, out=z)
        np.dot(self.w_heads, z, out=buf.head_logits)
        buf.head_logits += self.b_heads
        return buf.head_logits
