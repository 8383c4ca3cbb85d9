"""Shared bits of the `bin/` scripts."""
import sys

from absl import app


def underscore_flag(arg: str) -> str:
  """`--src-data-dir=x` -> `--src_data_dir=x`: HAT spells flags with dashes, absl with underscores; a negated
  boolean `--no-fresh-check` -> absl's `--nofresh_check`."""
  if not arg.startswith("--"):
    return arg
  name, eq, value = arg[2:].partition("=")
  if name.startswith("no-") and not eq:
    return "--no" + name[3:].replace("-", "_")
  return "--" + name.replace("-", "_") + eq + value


def run(main) -> None:
  """`absl.app.run(main)` accepting dashed flag names too."""
  sys.argv = [sys.argv[0]] + [underscore_flag(a) for a in sys.argv[1:]]
  app.run(main)


def exit_with(tool, *args, **kwargs) -> None:
  """sys.exit(tool(*args, **kwargs)) for a tool returning an exit status; a missing input (FileNotFoundError,
  e.g. a stage not run yet) ends with its message instead of a traceback."""
  try:
    status = tool(*args, **kwargs)
  except FileNotFoundError as e:
    raise SystemExit(f"error: {e}") from None
  sys.exit(status)
