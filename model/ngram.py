"""Witten-Bell interpolated variable-order Markov model over a small alphabet (MIDI pitches).

Why this exists: a piece repeats its own phrases, and an n-gram that learns the piece as it is
heard predicts those repeats far better than any network's hidden state remembers them. The same
class is the corpus Markov-3 baseline (trained once, then frozen) and the online variable-order
model (orders 0-16) that learns one performance note by note.

The estimate, for a context h of length k with its one-shorter suffix h':

    P(s | h) = (c(h, s) + T(h) * P(s | h')) / (c(h) + T(h))

c(h, s) = times s followed h, c(h) = its total, T(h) = number of distinct symbols that followed
h. A context never seen backs off entirely (P(s | h) = P(s | h')), and below order 0 sits the
uniform distribution (order -1), so every symbol keeps a non-zero probability.

Contexts live in a suffix trie walked from the most recent symbol backwards, so one update or
one prediction touches at most max_order + 1 nodes. Counts are sparse (most deep contexts have
seen one symbol, kept inline); a node that has seen many distinct symbols also keeps a dense
float64 row so the shallow, busy levels cost one vector operation instead of a Python loop.
Memory, measured with tracemalloc on an unrepetitive 5000-note melody at order 16: ~13 new
contexts per note at ~104 bytes each, ~1.4 KB per note; a repetitive piece costs less.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import numpy as np

# A node whose count dict reaches this many distinct symbols also keeps a dense row.
_DENSE_AT = 12


class _Node:
    """One context: its follower counts, their sum and (lazily) its longer contexts.

    Most nodes of a deep model are seen once: one follower, one longer context. Those are kept
    inline (`sym`, `key`/`child`) and only become dicts at the second distinct entry, which
    cuts memory per context about fivefold (~104 bytes instead of ~500, measured).
    """

    __slots__ = ("total", "sym", "counts", "dense", "key", "child", "kids")

    def __init__(self) -> None:
        self.total = 0
        self.sym = -1  # the only follower while counts is None
        self.counts: dict[int, int] | None = None
        self.dense: np.ndarray | None = None
        self.key = -1  # the only longer context (its extra symbol) while kids is None
        self.child: _Node | None = None
        self.kids: dict[int, _Node] | None = None

    def add(self, symbol: int, n_symbols: int) -> None:
        self.total += 1
        counts = self.counts
        if counts is None:
            if self.sym == symbol or self.total == 1:
                self.sym = symbol
                return
            counts = self.counts = {self.sym: self.total - 1}
        counts[symbol] = counts.get(symbol, 0) + 1
        if self.dense is not None:
            self.dense[symbol] += 1.0
        elif len(counts) >= _DENSE_AT:
            dense = np.zeros(n_symbols, dtype=np.float64)
            dense[list(counts)] = list(counts.values())
            self.dense = dense

    def types(self) -> int:
        """Distinct followers T(h)."""
        return (1 if self.total else 0) if self.counts is None else len(self.counts)

    def count(self, symbol: int) -> int:
        if self.counts is None:
            return self.total if symbol == self.sym else 0
        return self.counts.get(symbol, 0)

    def count_items(self) -> list[tuple[int, int]]:
        if self.counts is None:
            return [(self.sym, self.total)] if self.total else []
        return list(self.counts.items())

    def get(self, key: int) -> _Node | None:
        if self.kids is not None:
            return self.kids.get(key)
        return self.child if self.key == key else None

    def make(self, key: int) -> _Node:
        node = _Node()
        if self.kids is not None:
            self.kids[key] = node
        elif self.child is None:
            self.key, self.child = key, node
        else:
            self.kids = {self.key: self.child, key: node}
            self.key, self.child = -1, None
        return node

    def children(self) -> list[tuple[int, _Node]]:
        if self.kids is not None:
            return list(self.kids.items())
        return [] if self.child is None else [(self.key, self.child)]


class WittenBell:
    """Interpolated Witten-Bell estimate over contexts of length 0..max_order.

    `update(context, symbol)` counts `symbol` after every suffix of `context` up to max_order
    (only the last max_order symbols of `context` matter); `probs(context)` is the full
    distribution, `prob(context, symbol)` one entry of it without building the vector.
    """

    def __init__(self, max_order: int, n_symbols: int = 128) -> None:
        if not isinstance(max_order, int) or max_order < 0:
            raise ValueError(f"max_order must be an integer >= 0, got {max_order!r}")
        if not isinstance(n_symbols, int) or n_symbols < 1:
            raise ValueError(f"n_symbols must be an integer >= 1, got {n_symbols!r}")
        self.max_order = max_order
        self.n_symbols = n_symbols
        self._root = _Node()
        self._nodes = 1

    def reset(self) -> None:
        """Forget every count."""
        self._root = _Node()
        self._nodes = 1

    @property
    def n_contexts(self) -> int:
        """Number of context nodes (the order-0 root included): the memory driver."""
        return self._nodes

    @property
    def n_updates(self) -> int:
        """Number of symbols counted so far."""
        return self._root.total

    def _check(self, symbol: int) -> int:
        s = int(symbol)
        if not 0 <= s < self.n_symbols:
            raise ValueError(f"symbol {symbol!r} outside 0..{self.n_symbols - 1}")
        return s

    def update(self, context: Sequence[int], symbol: int, chain: list[_Node] | None = None) -> None:
        """Count `symbol` after the empty context and after each suffix of `context` up to max_order.

        chain: `_chain(context)` as a caller that has just predicted from this context walked it
        (the online models' blend, then their update: one walk of the trie, not two)."""
        s = self._check(symbol)
        n = self.n_symbols
        if chain is None:
            chain = [self._root]
        for node in chain:
            node.add(s, n)
        k = len(context)
        for i in range(len(chain), min(self.max_order, k) + 1):
            key = int(context[k - i])
            child = node.get(key)
            if child is None:
                child = node.make(key)
                self._nodes += 1
            node = child
            node.add(s, n)

    def fit(self, sequences: Iterable[Sequence[int]]) -> WittenBell:
        """Count every symbol of every sequence after its own history (never across sequences)."""
        for seq in sequences:
            seq = [self._check(x) for x in seq]
            for t, s in enumerate(seq):
                self.update(seq[max(0, t - self.max_order) : t], s)
        return self

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The whole table as plain integer arrays (np.savez-able, no pickle); parents before children."""
        parent, key, c_node, c_sym, c_n = [], [], [], [], []
        queue: list[tuple[_Node, int, int]] = [(self._root, -1, -1)]
        for i, (node, par, k) in enumerate(queue):  # breadth first: the list grows as it is walked
            parent.append(par)
            key.append(k)
            for sym, n in node.count_items():
                c_node.append(i)
                c_sym.append(sym)
                c_n.append(n)
            for k2, child in node.children():
                queue.append((child, i, k2))
        return {
            "shape": np.array([self.max_order, self.n_symbols], dtype=np.int64),
            "node_parent": np.array(parent, dtype=np.int64),
            "node_key": np.array(key, dtype=np.int64),
            "count_node": np.array(c_node, dtype=np.int64),
            "count_symbol": np.array(c_sym, dtype=np.int64),
            "count": np.array(c_n, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> WittenBell:
        """Inverse of to_arrays; ValueError if the arrays do not describe a table."""
        try:
            max_order, n_symbols = (int(x) for x in arrays["shape"])
            parent, key = arrays["node_parent"].tolist(), arrays["node_key"].tolist()
            c_node, c_sym, c_n = arrays["count_node"].tolist(), arrays["count_symbol"].tolist(), arrays["count"].tolist()
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"not a Witten-Bell table ({e})") from None
        m = cls(max_order, n_symbols)
        nodes = [m._root]
        for par, k in zip(parent[1:], key[1:], strict=True):
            if not 0 <= par < len(nodes) or not 0 <= k < n_symbols:
                raise ValueError("not a Witten-Bell table (bad node links)")
            nodes.append(nodes[par].make(k))
        per_node: list[dict[int, int]] = [{} for _ in nodes]
        for i, sym, n in zip(c_node, c_sym, c_n, strict=True):
            if not (0 <= i < len(nodes) and 0 <= sym < n_symbols and n > 0):
                raise ValueError("not a Witten-Bell table (bad counts)")
            per_node[i][sym] = n
        for node, counts in zip(nodes, per_node, strict=True):
            node.total = sum(counts.values())
            if len(counts) == 1:
                (node.sym,) = counts
            elif len(counts) > 1:
                node.counts = counts
                if len(counts) >= _DENSE_AT:
                    node.dense = np.zeros(n_symbols, dtype=np.float64)
                    node.dense[list(counts)] = list(counts.values())
        m._nodes = len(nodes)
        return m

    def _chain(self, context: Sequence[int]) -> list[_Node]:
        """Nodes of the seen suffixes of `context`, shortest (the root) first."""
        node = self._root
        chain = [node]
        k = len(context)
        for i in range(1, min(self.max_order, k) + 1):
            node = node.get(int(context[k - i]))  # type: ignore[assignment]
            if node is None:
                break
            chain.append(node)
        return chain

    def probs(self, context: Sequence[int] = ()) -> np.ndarray:
        """P(. | context) as float64 (n_symbols,), summing to 1: plain Witten-Bell, which is `blend`
        with concentration = types at every order (a = 1, b = 0) and the uniform at the bottom."""
        n = self.n_symbols
        order = self.max_order + 1
        p, _ = self.blend(context, np.full(n, 1.0 / n), (1.0,) * order, (0.0,) * order)
        return p

    def blend(self, context: Sequence[int], base: np.ndarray, a: Sequence[float], b: Sequence[float],
              offset: int = 0, out: np.ndarray | None = None, chain: list[_Node] | None = None) -> tuple[np.ndarray, float]:
        """P(. | context) smoothed down to `base` instead of the uniform, and the share of base in it.

        The same recursion as `probs` with two changes: the bottom (below order 0) is `base`
        (e.g. the network's distribution), and a context of order k that has seen `total`
        notes of `types` distinct symbols backs off with concentration a[k] * types + b[k]
        (Witten-Bell is a = 1, b = 0): P_k(s) = (c(s) + beta P_{k-1}(s)) / (total + beta).
        a and b are fitted on held-out pieces (training.online_fit).

        `base` may cover only the symbols offset .. offset + len(base) - 1: the result is then that
        window of the distribution (the mass outside it is left out, so it may sum to less than 1).
        `out` (len(base)) receives it, so a caller on the hot path allocates nothing for it.
        `chain`: `_chain(context)`, when the caller walked it already.
        """
        m = len(base)
        hi = offset + m
        idx: list[int] = []
        val: list[float] = []
        dense: list[tuple[np.ndarray, float]] = []
        w = 1.0
        if chain is None:
            chain = self._chain(context)
        for k in range(len(chain) - 1, -1, -1):
            node = chain[k]
            total = node.total
            if total == 0:
                continue
            counts = node.counts
            beta = a[k] * (1 if counts is None else len(counts)) + b[k]
            denom = total + beta
            scale = w / denom
            if counts is None:
                if offset <= node.sym < hi:
                    idx.append(node.sym - offset)
                    val.append(total * scale)
            elif node.dense is not None:
                dense.append((node.dense, scale))
            else:
                for sym, c in counts.items():
                    if offset <= sym < hi:
                        idx.append(sym - offset)
                        val.append(c * scale)
            w *= beta / denom
        p = np.empty(m) if out is None else out
        np.multiply(base, w, out=p)
        for d, sc in dense:
            p += d[offset:hi] * sc
        if idx:
            p += np.bincount(idx, weights=val, minlength=m)
        return p, w

    def level_stats(self, context: Sequence[int], symbol: int, out: np.ndarray) -> np.ndarray:
        """Per order k (row k of out, (max_order + 1, 3)): count of symbol, total, types of the
        order-k context, zeros where that context was never seen. What `blend` needs, for fitting."""
        out[:] = 0.0
        for k, node in enumerate(self._chain(context)):
            if node.total:
                out[k] = (node.count(symbol), node.total, node.types())
        return out

    def prob(self, context: Sequence[int], symbol: int) -> float:
        """P(symbol | context), the same number as probs(context)[symbol], without the vector."""
        s = self._check(symbol)
        p = 1.0 / self.n_symbols
        for node in self._chain(context):
            total = node.total
            if total == 0:
                continue
            types = node.types()
            p = (node.count(s) + types * p) / (total + types)
        return p


class OnlineSequenceModel:
    """A WittenBell that keeps its own history: the online model of one piece as it is heard.

    `probs()` predicts the next symbol from what was observed; `observe(symbol)` first counts it
    after that history, then appends it. `fork()` gives an independent copy for planning; with
    `learn=False` the copy shares the counts read-only and only moves its own history, so
    planning costs nothing and never teaches the model its own answers.
    """

    def __init__(self, max_order: int = 16, n_symbols: int = 128, learn: bool = True, memory: int | None = None) -> None:
        """memory=None learns from everything heard (the baselines' definition). memory=M bounds a
        session that runs for weeks: predictions come from the last M to 2M symbols, never more.
        A shadow table starts counting once the active one holds M symbols and replaces it when
        the active one reaches 2M, so forgetting costs one extra update per note and no pause.
        """
        if memory is not None and (not isinstance(memory, int) or memory < 1):
            raise ValueError(f"memory must be a positive number of symbols or None, got {memory!r}")
        self.model = WittenBell(max_order, n_symbols)
        self.learn = learn
        self.memory = memory
        self._shadow: WittenBell | None = None
        self._history: list[int] = []
        # A learner's walk of its trie for the current history, kept from blend to the update that
        # follows it: (the table it belongs to, its nodes). Only a learner keeps one: a frozen fork
        # shares a table that its parent may still grow, so its walk could go stale.
        self._walk: tuple[WittenBell, list[_Node]] | None = None

    @property
    def max_order(self) -> int:
        return self.model.max_order

    @property
    def n_symbols(self) -> int:
        return self.model.n_symbols

    @property
    def history(self) -> tuple[int, ...]:
        """The last max_order observed symbols (all that predictions depend on)."""
        return tuple(self._history)

    def __len__(self) -> int:
        return self.model.n_updates

    def observe(self, symbol: int) -> None:
        """Learn `symbol` as the continuation of the history (if learning), then append it to the history."""
        if self.learn:
            walk = self._walk
            self.model.update(self._history, symbol, walk[1] if walk is not None and walk[0] is self.model else None)
            if self._shadow is not None:
                self._shadow.update(self._history, symbol)
            if self.memory is not None:
                self._rotate()
        elif not 0 <= int(symbol) < self.n_symbols:
            raise ValueError(f"symbol {symbol!r} outside 0..{self.n_symbols - 1}")
        self._walk = None
        self._history.append(int(symbol))
        if len(self._history) > self.max_order:
            del self._history[0]

    def _rotate(self) -> None:
        n = self.model.n_updates
        if self._shadow is None and n >= self.memory:
            self._shadow = WittenBell(self.max_order, self.n_symbols)
        elif n >= 2 * self.memory:
            self.model, self._shadow = self._shadow, WittenBell(self.max_order, self.n_symbols)

    def probs(self) -> np.ndarray:
        """P(next | history), float64 (n_symbols,) summing to 1 (uniform before anything is seen)."""
        return self.model.probs(self._history)

    def prob(self, symbol: int) -> float:
        return self.model.prob(self._history, symbol)

    def blend(self, base: np.ndarray, a: Sequence[float], b: Sequence[float], offset: int = 0,
              out: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """`WittenBell.blend` after the history: the piece's model smoothed down to `base`."""
        chain = None
        if self.learn:
            walk = self._walk
            if walk is None or walk[0] is not self.model:
                walk = self._walk = (self.model, self.model._chain(self._history))
            chain = walk[1]
        return self.model.blend(self._history, base, a, b, offset, out, chain)

    def level_stats(self, symbol: int, out: np.ndarray) -> np.ndarray:
        return self.model.level_stats(self._history, symbol, out)

    def reset(self) -> None:
        """Forget counts and history: a new piece (a fresh table, so a frozen fork never clears its parent's)."""
        self.model = WittenBell(self.max_order, self.n_symbols)
        self._shadow = None
        self._history = []
        self._walk = None

    def fork(self, learn: bool = True) -> OnlineSequenceModel:
        """A copy whose observations never touch this one.

        learn=True deep-copies the counts (cost grows with what was learned); learn=False shares
        them frozen, copying only the short history (cheap: what a planning fork wants).
        """
        if learn:
            return copy.deepcopy(self)
        twin = copy.copy(self)
        twin.learn = False
        twin._history = list(self._history)
        twin._walk = None
        return twin
