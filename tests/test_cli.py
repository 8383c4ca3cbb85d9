"""bin/ scripts' flag spelling: HAT's dashed flags reach absl as underscores, negated booleans as --noFLAG."""
import pytest

from densetnt_jax.cli import exit_with, underscore_flag


@pytest.mark.parametrize("arg, expected", [
    ("--src-data-dir=a-b", "--src_data_dir=a-b"),     # the value keeps its dashes
    ("--num-workers", "--num_workers"),
    ("--no-fresh-check", "--nofresh_check"),
    ("--nomeasure", "--nomeasure"),
    ("positional-arg", "positional-arg"),
])
def test_underscore_flag(arg, expected):
  assert underscore_flag(arg) == expected


def test_exit_with_turns_a_missing_input_into_its_message():
  def missing():
    raise FileNotFoundError("no program in runs/x: run --stage=int first")
  with pytest.raises(SystemExit, match="error: no program in runs/x"):
    exit_with(missing)
  with pytest.raises(SystemExit) as e:
    exit_with(lambda: 1)
  assert e.value.code == 1
