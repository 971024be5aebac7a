"""Checkpoints: round trip, and every kind of broken file gives one clear line naming it."""

from __future__ import annotations

import json
import pickle
import re

import pytest
import torch

from ripieno.model import checkpoint as ck
from ripieno.model.encoding import ENCODING_VERSION
from ripieno.model.network import ModelConfig, NoteLSTM

torch.set_num_threads(1)
TINY = ModelConfig(hidden=8, layers=1, pitch_embed=4, embed=2, cond_embed=2, head_hidden=4)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = NoteLSTM(TINY)
    path = ck.save(tmp_path / "m.pt", model, {"val_pitch_nll": 1.5, "data": ["bach"]})
    return model, path


def test_round_trip(saved):
    model, path = saved
    got = ck.load(path)
    assert got.config == TINY and got.encoding == TINY.encoding and got.path == path
    assert got.meta == {"val_pitch_nll": 1.5, "data": ["bach"]}
    assert not got.model.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), got.model.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert not list(path.parent.glob("*.tmp"))


def _expect(path, needle):
    with pytest.raises(ck.CheckpointError) as err:
        ck.load(path)
    msg = str(err.value)
    assert str(path) in msg and needle in msg and "\n" not in msg, msg


def test_missing(tmp_path):
    _expect(tmp_path / "nope.pt", "no such file")


def test_truncated(saved):
    _, path = saved
    path.write_bytes(path.read_bytes()[:300])
    _expect(path, "unreadable")


def test_garbage(tmp_path):
    p = tmp_path / "g.pt"
    p.write_bytes(b"\x00garbage" * 100)
    _expect(p, "unreadable")


def test_foreign_tensor_file(tmp_path):
    p = tmp_path / "f.pt"
    torch.save({"weight": torch.zeros(3)}, p)
    _expect(p, "not a ripieno checkpoint")


def test_arbitrary_pickle_is_never_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pwned')",))

    p = tmp_path / "evil.pt"
    torch.save({"format": ck.FORMAT, "x": Boom()}, p, pickle_module=pickle)
    _expect(p, "unreadable")


def _rewrite(path, edit):
    blob = torch.load(path, weights_only=True)
    edit(blob)
    torch.save(blob, path)


def test_checksum_mismatch(saved):
    _, path = saved

    def flip(blob):
        w = blob["weights"]["lstm.weight_hh_l0"]
        w[0, 0] += 1.0

    _rewrite(path, flip)
    _expect(path, "checksum mismatch")


def test_encoding_version_mismatch(saved):
    _, path = saved

    def bump(blob):
        h = json.loads(blob["header"])
        h["encoding_version"] = ENCODING_VERSION + 1
        h["config"]["encoding"]["version"] = ENCODING_VERSION + 1
        blob["header"] = json.dumps(h)

    _rewrite(path, bump)
    _expect(path, f"encoding version {ENCODING_VERSION + 1}")


V1_ENCODING = {"version": 1, "time_bins": 48, "time_min": 0.02, "time_max": 8.0, "velocity_bins": 16, "max_interval": 36, "features": ["interval", "pitch_class", "step_ratio"]}


@pytest.mark.parametrize("top_level", [True, False])
def test_an_encoding_1_checkpoint_is_refused_with_the_retrain_line(saved, top_level):
    """A checkpoint of encoding 1 (time in seconds) is one line saying to retrain, whichever key says so."""
    _, path = saved

    def to_v1(blob):
        h = json.loads(blob["header"])
        h["config"]["encoding"] = dict(V1_ENCODING)
        if top_level:
            h["encoding_version"] = 1
        else:
            del h["encoding_version"]  # only the config's encoding tells
        blob["header"] = json.dumps(h)

    _rewrite(path, to_v1)
    _expect(path, "retrain")
    with pytest.raises(ck.CheckpointError, match=r"encoding 1 \(time in seconds\)"):
        ck.load(path)


def test_weights_that_do_not_fit_the_config(saved):
    _, path = saved

    def grow(blob):
        h = json.loads(blob["header"])
        h["config"]["hidden"] = 9
        blob["header"] = json.dumps(h)

    _rewrite(path, grow)
    _expect(path, "do not fit the config")


def test_default_missing_or_present_is_clear():
    path = ck.default_path()
    assert path.name == "default.pt" and path.parent.name == "weights"
    if path.exists():
        assert ck.load("default").encoding.version == ENCODING_VERSION
    else:
        _expect("default", "no bundled default model")


def _torch_says(path) -> str:
    with pytest.raises(Exception) as err:
        torch.load(path, map_location="cpu", weights_only=True)
    return " ".join(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(err.value)).split())


@pytest.mark.parametrize("kind", ["garbage", "pickle"])
def test_torchs_reason_is_whole_sentences_without_its_advice_to_load_unsafely(tmp_path, kind):
    """Issue #6: the reason was torch's first line cut at 160 characters, mid-sentence, and that
    line is torch's advice (to load with weights_only=False), which ripieno must never take."""
    p = tmp_path / f"{kind}.pt"
    if kind == "garbage":
        p.write_bytes(b"\x00garbage" * 100)
    else:
        torch.save({"format": ck.FORMAT, "x": _Boom()}, p, pickle_module=pickle)
    with pytest.raises(ck.CheckpointError) as err:
        ck.load(p)
    msg = str(err.value)
    reason = msg.split("refused by the weights-only loader: ", 1)[1]
    assert "\n" not in msg and "\x1b" not in msg and "weights_only" not in msg, msg
    said = _torch_says(p)
    assert reason in said, (reason, said)
    after = said[said.index(reason) + len(reason):]
    assert reason.endswith(".") or after == "" or after.startswith(" Check the documentation"), (reason, after)


class _Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pwned')",))


def test_a_long_reason_is_cut_at_a_sentence_end_or_a_word_never_mid_word():
    two = RuntimeError("First sentence is short. " + "word " * 60 + "end.\nsecond line")
    assert ck._reason(two) == "First sentence is short."
    one = RuntimeError("x" * 10 + " " + "word " * 80)
    got = ck._reason(one)
    assert got.endswith(" ...") and len(got) <= ck.REASON_CHARS + 4 and not got[:-4].endswith(" "), got
    assert ck._reason(RuntimeError("")) == "RuntimeError"
    assert ck._reason(RuntimeError("Error(s) in loading state_dict for M:\n\tsize mismatch for w.")) == \
        "Error(s) in loading state_dict for M: size mismatch for w."


@pytest.mark.parametrize("bad", [{"hidden": "x"}, {"hidden": -1}, {"layers": 0}])
def test_a_header_config_torch_cannot_build_is_one_line(saved, bad):
    _, path = saved

    def spoil(blob):
        h = json.loads(blob["header"])
        h["config"].update(bad)
        blob["header"] = json.dumps(h)

    _rewrite(path, spoil)
    _expect(path, "bad model config")
