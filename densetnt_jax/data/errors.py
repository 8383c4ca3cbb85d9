"""Typed errors for bad input: each names the file (or LMDB key) and the problem, on one capped line."""

MAX_PROBLEM_CHARS = 300                 # a reason never carries more of a bad file than this
MAX_PATH_CHARS = 1000


def one_line(text, limit: int = MAX_PROBLEM_CHARS) -> str:
  """`text` as one printable line of at most `limit` characters: newlines, control characters and undecodable
  file-name bytes are escaped, and a longer text is cut (a 100 MB garbage header never reaches a log)."""
  text = str(text)
  cut = len(text) > limit
  text = text[:limit]
  if not text.isprintable():
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
  if cut or len(text) > limit:
    text = text[:limit - 3] + "..."
  return text


class DataError(ValueError):
  """A raw input file is unusable. `path` is the file, `problem` says what is wrong with it (one line, capped)."""

  def __init__(self, path, problem: str):
    self.path = str(path)
    self.problem = one_line(problem)
    super().__init__(f"{one_line(self.path, MAX_PATH_CHARS)}: {self.problem}")


class CsvError(DataError):
  """A forecasting CSV is malformed or violates the Argoverse 1 sequence rules."""


class MapError(DataError):
  """An HD map file is missing, truncated or inconsistent."""


class RecordError(DataError):
  """A packed LMDB record cannot be decoded (the path names the LMDB and the key)."""
