"""A piano-roll PNG of a prompt and ripieno's continuation, for `ripieno continue --png`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

NoteTuple = tuple[float, int, float, int]  # onset, pitch, duration, velocity


class DrawError(Exception):
    """The PNG could not be written (a missing folder, no permission, a format matplotlib lacks): one line."""


def draw(path: str | Path, prompt: Sequence[NoteTuple], continuation: Sequence[NoteTuple]) -> None:
    """Bars per note (opacity follows velocity): the prompt in blue, ripieno in orange."""
    try:
        import matplotlib
    except ImportError:
        raise DrawError("--png needs matplotlib, which this install lacks: pip install 'ripieno[plot]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    notes = [*prompt, *continuation]
    end = max((o + d for o, _, d, _ in notes), default=1.0)
    fig, ax = plt.subplots(figsize=(max(6.0, min(24.0, end * 0.8)), 4.5), dpi=100)
    for group, color in ((prompt, "tab:blue"), (continuation, "tab:orange")):
        for onset, pitch, dur, vel in group:
            ax.broken_barh([(onset, max(dur, 0.01))], (pitch - 0.4, 0.8), facecolors=color, alpha=0.35 + 0.65 * vel / 127)
    pitches = [p for _, p, _, _ in notes] or [60]
    ax.set_ylim(min(pitches) - 2, max(pitches) + 2)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # MIDI pitches are whole numbers, also on a narrow roll
    ax.set_xlim(0, end * 1.02)
    ax.set_xlabel("seconds")
    ax.set_ylabel("MIDI pitch")
    ax.legend(handles=[Patch(color="tab:blue", label="prompt"), Patch(color="tab:orange", label="ripieno")], loc="upper right")
    fig.tight_layout()
    try:
        fig.savefig(str(path), format="png")
    except (OSError, ValueError) as exc:
        raise DrawError(getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__) from None
    finally:
        plt.close(fig)
