"""Shared bits of the `bin/` scripts: dashed flag names, and one-line errors.

Every script runs through `run(main)`. An expected error (a bad flag value or config override, missing data, a
stage not run yet, a damaged file) ends it with one line `error: what, where; what to do` on stderr and exit
status 2; `--verbose` (or DENSETNT_VERBOSE=1) prints the traceback above that line. Any other exception is a
bug and keeps Python's traceback.
"""
from __future__ import annotations

import dis
import os
import re
import sys
import traceback

from absl import app, flags
from ml_collections import config_flags

USER_ERROR_EXIT = 2
MESSAGE_MAX_CHARS = 800
VERBOSE_ENV = "DENSETNT_VERBOSE"
HELP_HINT = "run with --helpshort for the flags"

if "verbose" not in flags.FLAGS:
  flags.DEFINE_bool("verbose", False, f"On an expected error, print its traceback too (or set {VERBOSE_ENV}=1).")

# About the user's input wherever they are raised: a path that is not there or not readable, a bad command line.
INPUT_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, app.UsageError,
                flags.Error)
# Raised on purpose by this package with a message for the user (config checks, DataError, RecordError,
# ArtifactError, CheckpointError, NonFiniteLossError, ...); the same types raised inside a library are our bugs.
OWN_ERRORS = (ValueError, FloatingPointError)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_RAISE = dis.opmap["RAISE_VARARGS"]


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
  """`absl.app.run(main)` accepting dashed flag names, with expected errors (flags included) as one line."""
  sys.argv = [sys.argv[0]] + [underscore_flag(a) for a in sys.argv[1:]]
  app.run(lambda argv: _call(main, argv), flags_parser=_parse_flags)


def exit_with(tool, *args, **kwargs) -> None:
  """sys.exit(tool(*args, **kwargs)) for a tool returning an exit status; an expected error ends as one line
  with exit status 2, as under `run`."""
  sys.exit(_call(tool, *args, **kwargs))


def is_user_error(error: BaseException) -> bool:
  """An error about the input (shown as one line), as opposed to a bug (shown with its traceback)."""
  if isinstance(error, INPUT_ERRORS):
    return True
  return isinstance(error, OWN_ERRORS) and _raised_here(error)


def exit_on_user_error(error: BaseException, message: str | None = None) -> None:
  """Prints `error: <message, default the error's, on one line>` to stderr (the traceback first when verbose) and
  exits with 2."""
  if _verbose():
    traceback.print_exception(error)
  if message is None:
    hint = f"; {HELP_HINT}" if isinstance(error, (app.UsageError, flags.Error)) else ""
    message = (str(error) or type(error).__name__) + hint
  sys.stdout.flush()
  print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
  sys.exit(USER_ERROR_EXIT)


def one_line(text: str, limit: int = MESSAGE_MAX_CHARS) -> str:
  """`text` with its line breaks (and the indentation after them) as single spaces, cut to `limit` chars."""
  text = re.sub(r"\s*\n\s*", " ", str(text).strip())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _call(fn, *args, **kwargs):
  try:
    return fn(*args, **kwargs)
  except Exception as e:     # noqa: BLE001: sorted into input errors (one line) and bugs (re-raised)
    if not is_user_error(e):
      raise
    exit_on_user_error(e)


def _raised_here(error: BaseException) -> bool:
  """Whether `error` comes from a `raise` statement of this package or of the running script: its innermost
  traceback frame is there and stopped at a raise (a ValueError that numpy or int() raise from a call in our
  code stops at the call: a bug, not a message for the user)."""
  tb = error.__traceback__
  if tb is None:
    return False
  while tb.tb_next is not None:
    tb = tb.tb_next
  code = tb.tb_frame.f_code
  path = os.path.abspath(code.co_filename)
  script_dir = os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else None
  ours = path.startswith(_PACKAGE_DIR + os.sep) or os.path.dirname(path) == script_dir
  return ours and 0 <= tb.tb_lasti < len(code.co_code) and code.co_code[tb.tb_lasti] == _RAISE


def _verbose() -> bool:
  if os.environ.get(VERBOSE_ENV, "").lower() in ("1", "true", "yes"):
    return True
  if flags.FLAGS.is_parsed():
    return bool(flags.FLAGS.verbose)
  return "--verbose" in sys.argv[1:]       # a flag error stopped the parse before it


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parse with its errors as one line: an unknown flag, a bad value, a config override naming no
  field, a config file that does not load."""
  try:
    args = flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    # a config file's own error arrives as a traceback in the message: its first and last lines say it
    exit_on_user_error(e, " ".join(lines[:1] + lines[-1:] if len(lines) > 1 else lines) + f"; {HELP_HINT}")
  except (AttributeError, KeyError) as e:     # config_flags: an override of a field the config does not have
    message = _override_error(argv, e)
    if message is None:                      # not about an override: a bug (e.g. in a config file)
      raise
    exit_on_user_error(e, message)
  _check_config_files()
  return args


def _override_error(argv: list[str], error: BaseException) -> str | None:
  """The line for a config override naming a missing field, or None when no override names that field."""
  while error.args and isinstance(error.args[0], BaseException):   # AttributeError(KeyError(message))
    error = error.args[0]
  text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
  lines = [line.strip() for line in text.splitlines() if line.strip()] or [""]
  field = lines[0].strip("'\"")
  named = [a for a in argv[1:] if a.startswith("--") and field in a.split("=")[0][2:].split(".")[1:]]
  if not named:
    return None
  hint = f" ({' '.join(lines[1:])})" if len(lines) > 1 else ""
  return f"{' '.join(named)}: the config has no field {field!r}{hint}; fix the override's name"


def _check_config_files() -> None:
  """config_flags keeps a config file that failed to load until its first use; report it here instead."""
  for name in list(flags.FLAGS):
    flag = flags.FLAGS[name]
    try:
      filename = config_flags.get_config_filename(flag)
    except TypeError:          # not a config flag
      continue
    try:
      getattr(flag.value, "keys", None)
    except OSError as e:
      cause = e.__cause__ or e
      last = [line.strip() for line in str(cause).splitlines() if line.strip()][-1:]
      exit_on_user_error(e, f"--{name}={filename}: the config file does not load ({' '.join(last)}); give an "
                            f"existing file, e.g. --{name}=configs/argo.py")
