"""Typed errors for bad input: each names the file (or LMDB key) and the problem."""


class DataError(ValueError):
  """A raw input file is unusable. `path` is the file, `problem` says what is wrong with it."""

  def __init__(self, path, problem: str):
    self.path = str(path)
    self.problem = problem
    super().__init__(f"{self.path}: {problem}")


class CsvError(DataError):
  """A forecasting CSV is malformed or violates the Argoverse 1 sequence rules."""


class MapError(DataError):
  """An HD map file is missing, truncated or inconsistent."""


class RecordError(DataError):
  """A packed LMDB record cannot be decoded (the path names the LMDB and the key)."""
