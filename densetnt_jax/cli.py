"""Shared bits of the `bin/` scripts."""
import sys

from absl import app


def underscore_flag(arg: str) -> str:
  """`--src-data-dir=x` -> `--src_data_dir=x`: HAT spells flags with dashes, absl with underscores."""
  if not arg.startswith("--"):
    return arg
  name, eq, value = arg[2:].partition("=")
  return "--" + name.replace("-", "_") + eq + value


def run(main) -> None:
  """`absl.app.run(main)` accepting dashed flag names too."""
  sys.argv = [sys.argv[0]] + [underscore_flag(a) for a in sys.argv[1:]]
  app.run(main)
