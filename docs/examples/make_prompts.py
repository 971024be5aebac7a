"""Cut the example prompts from held-out pieces (tests/data/eval: the TEST split, never trained on).

`python docs/examples/make_prompts.py` writes <name>.prompt.mid here; README.md has the
`ripieno continue` commands that turn them into the continuations and piano rolls.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ripieno.training.midi_io import read_midi, read_notes, write_midi
from ripieno.training.pieces import events_from_notes

HERE = Path(__file__).resolve().parent
EVAL = HERE.parents[1] / "tests" / "data" / "eval"
PROMPTS = {  # name: (held-out file, notes kept as the prompt)
    "folk_song": ("essenFolksong_erk20.abc_119.mid", 24),
    "ballad": ("essenFolksong_ballad80.abc_74.mid", 32),
    "chorale": ("bach_bwv253.mxl.mid", 48),
}


MELODIES = {  # name: (held-out file with parts, notes of its top part kept): a melody to accompany
    "chorale_melody": ("bach_bwv253.mxl_parts.mid", 16),
}


def melody(path: Path) -> np.ndarray:
    """The top part (the lead) of a file with parts, as events in beats of its metre."""
    n = read_notes(path)
    top = n.part == 0
    onset, pos, bar = n.metre.beats(n.tick[top])
    end, _, _ = n.metre.beats(n.end_tick[top])
    events, _ = events_from_notes(onset, n.pitch[top], end - onset, n.velocity[top], 0, pos, bar)
    return events


def main() -> None:
    for name, (source, notes) in PROMPTS.items():
        events = read_midi(EVAL / source)[:notes]
        write_midi(HERE / f"{name}.prompt.mid", events)
        print(f"{name}.prompt.mid: {len(events)} notes of {source}")  # noqa: T201 - script output
    for name, (source, notes) in MELODIES.items():
        events = melody(EVAL / source)[:notes]
        write_midi(HERE / f"{name}.prompt.mid", events)
        print(f"{name}.prompt.mid: {len(events)} melody notes of {source}")  # noqa: T201 - script output


if __name__ == "__main__":
    main()
