"""Cut the example prompts from held-out pieces (tests/data/eval: the TEST split, never trained on).

`python docs/examples/make_prompts.py` writes <name>.prompt.mid here; README.md has the
`ripieno continue` commands that turn them into the continuations and piano rolls.
"""

from __future__ import annotations

from pathlib import Path

from ripieno.training.midi_io import read_midi, write_midi

HERE = Path(__file__).resolve().parent
EVAL = HERE.parents[1] / "tests" / "data" / "eval"
PROMPTS = {  # name: (held-out file, notes kept as the prompt)
    "folk_song": ("essenFolksong_erk20.abc_119.mid", 24),
    "ballad": ("essenFolksong_ballad80.abc_74.mid", 32),
    "chorale": ("bach_bwv253.mxl.mid", 48),
}


def main() -> None:
    for name, (source, notes) in PROMPTS.items():
        events = read_midi(EVAL / source)[:notes]
        write_midi(HERE / f"{name}.prompt.mid", events)
        print(f"{name}.prompt.mid: {len(events)} notes of {source}")  # noqa: T201 - script output


if __name__ == "__main__":
    main()
