"""The daemon's commands never import torch (issue #14): `run`, `continue` and `ports` work with
torch made unimportable, and at exit no torch module is loaded.

Each command runs in a real subprocess through `NO_TORCH`, a wrapper around the real entry point
that puts an import blocker first on sys.meta_path (any `import torch...` raises) and, at exit,
prints which torch modules are in sys.modules. `run` meets a real JACK server and answers a real
phrase: the whole playing path, model load included, is covered.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from peers import start_wired, wait_until
from test_continue import write_prompt
from tiny_model import tiny_checkpoint

WRAPPER = r"""
import atexit, sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"{name} imported by a daemon command")
sys.meta_path.insert(0, NoTorch())
atexit.register(lambda: print("torch modules at exit:", sorted(m for m in sys.modules if m.split(".")[0] == "torch"), flush=True))
from ripieno.daemon.cli import main
sys.exit(main())
"""
NO_TORCH = [sys.executable, "-c", WRAPPER]
CLEAN = "torch modules at exit: []"


def test_the_blocker_really_blocks():
    """The wrapper is a real test: code that imports torch fails under it."""
    r = subprocess.run([sys.executable, "-c", WRAPPER.replace("from ripieno.daemon.cli import main\nsys.exit(main())", "import torch")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "imported by a daemon command" in r.stderr


def test_continue_and_ports_never_import_torch(tmp_path, jack):
    write_prompt(tmp_path / "prompt.mid")
    model = tiny_checkpoint(tmp_path / "tiny.safetensors")
    r = subprocess.run([*NO_TORCH, "continue", str(tmp_path / "prompt.mid"), "-o", str(tmp_path / "out.mid"), "--model", str(model), "--events", "8"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and CLEAN in r.stdout, r.stdout + r.stderr
    assert (tmp_path / "out.mid").stat().st_size > 0
    r = subprocess.run([*NO_TORCH, "ports", "--api", "jack"], capture_output=True, text=True, timeout=60, env=jack.env())
    assert r.returncode == 0 and CLEAN in r.stdout, r.stdout + r.stderr


def test_run_plays_without_torch_and_has_none_loaded_at_exit(jack, daemon, keyboard, synth, tmp_path):
    model = tiny_checkpoint(tmp_path / "tiny.safetensors")
    text = f'[midi]\napi = "jack"\ninput = "virtual"\noutput = "virtual"\n[engine]\nmode = "call"\nmodel = "{model}"\nsilence_s = 0.3\nseed = 5\n'
    d = start_wired(lambda t: daemon(t, entry=NO_TORCH), jack, keyboard, synth, text)
    keyboard.phrase([60, 62, 64, 65, 67], step=0.2, dur=0.15)
    wait_until(synth.note_ons, 10, what="an answer")
    assert d.stop(signal.SIGTERM) == 0, d.log()
    assert CLEAN in d.log(), d.log()[-2000:]


def test_ripieno_train_without_the_train_extra_says_what_to_install():
    """A daemon-only install has no torch: `ripieno-train` says which extra it needs, exit 2, no traceback."""
    code = WRAPPER.replace("from ripieno.daemon.cli import main", "from ripieno.training.cli import main")
    r = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "pip install 'ripieno[train]'" in r.stderr and "torch" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
