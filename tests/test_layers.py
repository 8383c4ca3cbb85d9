"""The package's layers point one way: `[tool.importlinter]` in pyproject.toml lists them top to bottom, and
import-linter checks that no module imports from a layer above its own, that no two modules of one line
("a | b") import each other, that every module of the package has a layer, and that the program tools
(checker, artifact, runner, perf, compiler) import neither the model nor the trainer."""
import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import ROOT

LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filenames=('pyproject.toml',), no_cache=True, no_logo=True))")


def test_imports_follow_the_layers():
  if importlib.util.find_spec("importlinter") is None:
    pytest.fail("import-linter is not installed: pip install -e '.[dev]' (make test does)")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
  proc = subprocess.run([sys.executable, "-c", LINT], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, f"an import crosses the layers of pyproject.toml:\n{proc.stdout}{proc.stderr}"
