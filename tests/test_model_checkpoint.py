"""Checkpoints: round trip, and every kind of broken file gives one clear line naming it."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from ripieno.model import checkpoint as ck
from ripieno.model import network
from ripieno.model.config import ModelConfig, expected_shapes
from ripieno.model.encoding import ENCODING_VERSION
from ripieno.model.network import NoteLSTM

torch.set_num_threads(1)
TINY = ModelConfig(hidden=8, layers=1, pitch_embed=4, embed=2, cond_embed=2, head_hidden=4)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = NoteLSTM(TINY)
    path = network.save(tmp_path / "m.safetensors", model, {"val_pitch_nll": 1.5, "data": ["bach"]})
    return model, path


def test_round_trip(saved):
    model, path = saved
    got = ck.load(path)
    assert got.config == TINY and got.encoding == TINY.encoding and got.path == path
    assert got.meta == {"val_pitch_nll": 1.5, "data": ["bach"]}
    for k, a in model.state_dict().items():
        assert np.array_equal(a.numpy(), got.weights[k]), k
    back = network.model_of(got)
    assert not back.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.parametrize("cfg", [TINY, ModelConfig(), ModelConfig(layers=3, hidden=32, tie_weights=True)])
def test_expected_shapes_are_exactly_the_torch_modules(cfg):
    """The torch-free shape check and the network it guards cannot drift apart."""
    assert expected_shapes(cfg) == {k: tuple(v.shape) for k, v in NoteLSTM(cfg).state_dict().items()}


def _expect(path, needle):
    with pytest.raises(ck.CheckpointError) as err:
        ck.load(path)
    msg = str(err.value)
    assert str(path) in msg and needle in msg and "\n" not in msg, msg
    return msg


def _read(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def _rewrite(path, header=None, tensors=None, reseal=True):
    """Edit a saved checkpoint's header (a dict edit) and/or tensors; reseal recomputes the checksum,
    so what is tested is the check after it (else the checksum must catch the edit)."""
    meta, ts = _read(path)
    h = json.loads(meta["header"])
    if header:
        header(h)
    if tensors:
        tensors(ts)
    meta["header"] = json.dumps(h, sort_keys=True)
    if reseal:
        meta["sha256"] = ck.checksum(meta["header"], ts)
    save_file(ts, str(path), metadata=meta)


def test_missing(tmp_path):
    _expect(tmp_path / "nope.safetensors", "no such file")


def test_a_directory_is_not_a_file(tmp_path):
    _expect(tmp_path, "not a file")


def test_truncated(saved):
    _, path = saved
    path.write_bytes(path.read_bytes()[:300])
    _expect(path, "unreadable")


def test_truncated_in_the_tensors(saved):
    _, path = saved
    path.write_bytes(path.read_bytes()[:-10])
    _expect(path, "unreadable")


def test_garbage(tmp_path):
    p = tmp_path / "g.safetensors"
    p.write_bytes(b"\x00garbage" * 100)
    _expect(p, "not a ripieno checkpoint")


def test_a_header_length_claiming_gigabytes_allocates_nothing(tmp_path):
    p = tmp_path / "huge.safetensors"
    p.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    _expect(p, "not a ripieno checkpoint")


def test_foreign_safetensors_file(tmp_path):
    p = tmp_path / "f.safetensors"
    save_file({"weight": np.zeros(3, np.float32)}, str(p))
    _expect(p, "not a ripieno checkpoint")


def test_a_format_1_torch_file_says_how_to_convert_it(tmp_path):
    p = tmp_path / "old.pt"
    torch.save({"format": ck.FORMAT, "header": "{}", "weights": {}}, p)
    msg = _expect(p, "ripieno-train convert")
    assert "format-1" in msg and str(p.with_suffix(".safetensors")) in msg


def test_an_arbitrary_pickle_is_never_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pwned')",))

    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"format": ck.FORMAT, "x": Boom()}))
    _expect(p, "not a ripieno checkpoint")  # the loader never unpickles: a pickle is just bytes that are not safetensors


def test_checksum_mismatch_on_a_flipped_weight(saved):
    _, path = saved

    def flip(ts):
        ts["weights/lstm.weight_hh_l0"] = ts["weights/lstm.weight_hh_l0"] + 1.0

    _rewrite(path, tensors=flip, reseal=False)
    _expect(path, "checksum mismatch")


def test_checksum_covers_the_header(saved):
    """Issue #15: editing dropout in the header loaded silently under format 1."""
    _, path = saved

    def edit(h):
        h["config"]["dropout"] = 0.5

    _rewrite(path, header=edit, reseal=False)
    _expect(path, "checksum mismatch")


def test_format_version_mismatch(saved):
    _, path = saved

    def bump(h):
        h["format_version"] = ck.FORMAT_VERSION + 1

    _rewrite(path, header=bump)
    _expect(path, f"checkpoint format {ck.FORMAT_VERSION + 1}")


def test_encoding_version_mismatch(saved):
    _, path = saved

    def bump(h):
        h["encoding_version"] = ENCODING_VERSION + 1
        h["config"]["encoding"]["version"] = ENCODING_VERSION + 1

    _rewrite(path, header=bump)
    _expect(path, f"encoding version {ENCODING_VERSION + 1}")


V1_ENCODING = {"version": 1, "time_bins": 48, "time_min": 0.02, "time_max": 8.0, "velocity_bins": 16, "max_interval": 36, "features": ["interval", "pitch_class", "step_ratio"]}


def test_an_encoding_1_checkpoint_is_refused_with_the_retrain_line(saved):
    _, path = saved

    def to_v1(h):
        h["config"]["encoding"] = dict(V1_ENCODING)
        h["encoding_version"] = 1

    _rewrite(path, header=to_v1)
    _expect(path, "retrain")
    with pytest.raises(ck.CheckpointError, match=r"encoding 1 \(time in seconds\)"):
        ck.load(path)


def test_weights_that_do_not_fit_the_config(saved):
    _, path = saved

    def grow(h):
        h["config"]["hidden"] = 9

    _rewrite(path, header=grow)
    _expect(path, "do not fit the config")


def test_a_missing_weight(saved):
    _, path = saved

    def drop(ts):
        del ts["weights/cond.weight"]

    _rewrite(path, tensors=drop)
    _expect(path, "missing cond.weight")


@pytest.mark.parametrize(
    "bad",
    [{"hidden": "x"}, {"hidden": -1}, {"layers": 0}, {"dropout": "x"}, {"hidden": 1.5}, {"tie_weights": "yes"}, {"layers": 4, "hidden": 4096}, {"surprise": 1}],
)
def test_a_header_config_out_of_bounds_is_one_line_before_any_allocation(saved, bad):
    """Issue #15: hidden = -1, dropout = "x" gave tracebacks; 4 layers of 4096 allocated 2 GB first."""
    _, path = saved

    def spoil(h):
        h["config"].update(bad)

    _rewrite(path, header=spoil)
    _expect(path, "bad model config")


@pytest.mark.parametrize("config", ["a string", None, [1, 2], {"encoding": "x"}, {"online": {"kind": "magic"}}])
def test_a_config_that_is_not_a_table_is_one_line(saved, config):
    _, path = saved

    def spoil(h):
        h["config"] = config

    _rewrite(path, header=spoil)
    _expect(path, "bad model config")


def test_default_missing_or_present_is_clear():
    path = ck.default_path()
    assert path.name == "default.safetensors" and path.parent.name == "weights"
    if path.exists():
        assert ck.load("default").encoding.version == ENCODING_VERSION
    else:
        _expect("default", "no bundled default model")


def test_save_refuses_weights_that_do_not_fit(tmp_path):
    weights = network.numpy_weights(NoteLSTM(TINY))
    weights.pop("cond.weight")
    with pytest.raises(ck.CheckpointError, match="do not fit"):
        ck.save(tmp_path / "x.safetensors", TINY, weights)
    assert not list(tmp_path.iterdir())


def test_a_huge_header_is_refused_unread(tmp_path):
    """Issue #15: a 200 MB header loaded at 814 MB resident before its refusal."""
    p = tmp_path / "fat.safetensors"
    save_file({"weight": np.zeros(3, np.float32)}, str(p), metadata={"format": ck.FORMAT, "pad": "x" * (4 << 20)})
    msg = _expect(p, "not a ripieno checkpoint")
    assert "header would be" in msg
