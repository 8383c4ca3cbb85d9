"""bin/ scripts' command line: HAT's dashed flags reach absl as underscores, negated booleans as --noFLAG; an
expected error (bad flag or override, missing input, a check our code raises) is one stderr line and exit 2,
a bug keeps its traceback."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from densetnt_jax import cli
from densetnt_jax.cli import exit_with, underscore_flag

SUBPROCESS_TIMEOUT_S = 120


@pytest.mark.parametrize("arg, expected", [
    ("--src-data-dir=a-b", "--src_data_dir=a-b"),     # the value keeps its dashes
    ("--num-workers", "--num_workers"),
    ("--no-fresh-check", "--nofresh_check"),
    ("--nomeasure", "--nomeasure"),
    ("positional-arg", "positional-arg"),
])
def test_underscore_flag(arg, expected):
  assert underscore_flag(arg) == expected


def test_exit_with_turns_an_expected_error_into_one_line_and_status_2(capsys):
  def missing():
    raise FileNotFoundError("no program in runs/x:\n  run --stage=int first")
  with pytest.raises(SystemExit) as e:
    exit_with(missing)
  assert e.value.code == 2
  assert capsys.readouterr().err == "error: no program in runs/x: run --stage=int first\n"
  with pytest.raises(SystemExit) as e:
    exit_with(lambda: 1)
  assert e.value.code == 1


def _raise_value_error():
  raise ValueError("config.train.batch_size=3 does not divide over 2 devices; use a multiple of 2")


def test_only_errors_raised_on_purpose_are_user_errors():
  """A ValueError from a `raise` in the package is a message for the user; one that numpy raises from a call
  (a bug) is not, nor is any other exception type."""
  from densetnt_jax.workdir import checkpoint_dir
  errors = {}
  for name, fn in {"raised by the package": lambda: checkpoint_dir("w", which="newest"),
                   "numpy's, from a call": lambda: np.zeros(3).reshape(2, 2),
                   "a KeyError": lambda: {}["x"]}.items():
    with pytest.raises(Exception) as e:
      fn()
    errors[name] = e.value
  assert cli.is_user_error(errors["raised by the package"])
  assert not cli.is_user_error(errors["numpy's, from a call"])
  assert not cli.is_user_error(errors["a KeyError"])
  assert cli.is_user_error(FileNotFoundError("anywhere"))  # a missing path is the user's, wherever raised
  assert cli.one_line("a\n   b\n" + "c" * 2000).startswith("a b c") and len(cli.one_line("x" * 2000)) == 800


def _script(*args, env=None):
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                        timeout=SUBPROCESS_TIMEOUT_S)


@pytest.mark.parametrize("args, says", [
    (["bin/plot_metrics.py", "/nonexistent/workdir"], "/nonexistent/workdir has no <stage>/metrics.jsonl"),
    (["bin/plot_metrics.py", "/w", "--dpi=many"], "flag --dpi=many"),
    (["bin/eval.py", "--config=configs/argo.py:tiny", "--config.data.lmdb_dir=/nonexistent/lmdb",
      "--workdir=/nonexistent/workdir"], "no packed 'val' split at /nonexistent/lmdb/val_lmdb: pack it first"),
    (["bin/eval.py", "--config=configs/argo.py:tiny", "--config.train.nonexistent=1"],
     "--config.train.nonexistent=1: the config has no field 'nonexistent'"),
    (["bin/eval.py", "--config=configs/argo.py:tiny", "--config.train.batchsize=3"], '"batch_size"'),
    (["bin/eval.py", "--config=configs/nowhere.py"], "--config=configs/nowhere.py: the config file does not load"),
    (["bin/eval.py", "--config=configs/argo.py:nosuch"], "unknown config variant 'nosuch'"),
    (["bin/show_scene.py", "--nosuchflag"], "Unknown command line flag 'nosuchflag'"),
])
def test_scripts_end_an_expected_error_with_one_line_and_status_2(args, says):
  proc = _script(*args)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr[-3000:]
  assert says in proc.stderr


def test_verbose_adds_the_traceback():
  proc = _script("bin/plot_metrics.py", "/nonexistent/workdir", "--verbose")
  assert proc.returncode == 2 and "Traceback" in proc.stderr
  assert proc.stderr.splitlines()[-1].startswith("error: /nonexistent/workdir has no")


def test_a_bar_in_a_log_writes_a_line_per_interval_even_with_a_changing_postfix(monkeypatch):
  """A log (stderr not a terminal) gets a progress line at most every LOG_INTERVAL_S: 1,000 steps with the loss
  shown every 10 (as training does) write a few lines, not 100 (tqdm's set_postfix redraws at once)."""
  import io

  from densetnt_jax import progress
  monkeypatch.setattr(progress, "_stderr_is_tty", lambda: False)
  log = io.StringIO()
  bar = progress.progress_bar(total=1000, desc="train", file=log)
  for i in range(1000):
    bar.update(1)
    if i % 10 == 0:
      progress.show(bar, loss=f"{i / 1000:.3f}")
  bar.close()
  lines = [line for line in log.getvalue().replace("\r", "\n").splitlines() if line.strip()]
  assert 1 <= len(lines) <= 3, lines[:5]
