"""Progress bars that stay readable in a log file.

On a terminal a bar redraws in place; in a log (stderr not a TTY) every redraw is a new line, so there the bar
updates at most every `LOG_INTERVAL_S` seconds (a 3,000-scene pack writes a few dozen lines, not thousands).
"""
from __future__ import annotations

import sys

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0


def progress_bar(iterable=None, **kwargs) -> tqdm:
  """`tqdm(iterable, **kwargs)`, throttled to one line per LOG_INTERVAL_S when stderr is not a terminal."""
  if not _stderr_is_tty():
    kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    kwargs.setdefault("maxinterval", LOG_INTERVAL_S)
    kwargs.pop("dynamic_ncols", None)       # no terminal to fit
  return tqdm(iterable, **kwargs)


def show(bar: tqdm, **postfix) -> None:
  """Sets the bar's postfix (loss, speed); it is drawn with the next update (tqdm's set_postfix redraws at once,
  which in a log wrote a line every time: every 10 steps of training instead of every 30 s)."""
  bar.set_postfix(postfix, refresh=False)


def _stderr_is_tty() -> bool:
  try:
    return sys.stderr.isatty()
  except (AttributeError, ValueError):
    return False
