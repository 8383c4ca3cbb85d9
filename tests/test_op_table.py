"""Each op kind is defined once: `quant/ops.py` (OPS) and, for its ONNX forms, `deploy/onnx_ops.py` (ONNX_OPS).
No other module of the package branches on an op kind's name: a condition (if / elif, a conditional expression,
a comprehension filter, a while) comparing a `.kind` / `kind` with an op kind's string literal is a failure,
unless the allow-list below names it with its reason."""
import ast
import types


from conftest import ROOT
from densetnt_jax.quant.ops import OPS

PACKAGE = ROOT / "densetnt_jax"
TABLES = {"quant/ops.py", "deploy/onnx_ops.py"}

# (file, enclosing function, kind): why this comparison stays outside the tables
ALLOWED: dict = {}


def _kind_expr(node) -> bool:
  """`kind`, `<anything>.kind` or `<anything>["kind"]` (a recorded op's dict)."""
  return (isinstance(node, ast.Name) and node.id == "kind") or \
      (isinstance(node, ast.Attribute) and node.attr == "kind") or \
      (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == "kind")


def _literals(node) -> list:
  if isinstance(node, ast.Constant) and isinstance(node.value, str):
    return [node.value]
  if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
    return [v for e in node.elts for v in _literals(e)]
  return []


def _kind_comparisons(test) -> list[str]:
  """Op-kind literals a condition compares a kind with (==, !=, in, not in; either side)."""
  out = []
  for node in ast.walk(test):
    if not isinstance(node, ast.Compare):
      continue
    operands = [node.left] + node.comparators
    for op, a, b in zip(node.ops, operands, operands[1:]):
      if not isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
        continue
      for k, lit in ((a, b), (b, a)):
        if _kind_expr(k):
          out += [v for v in _literals(lit) if v in OPS]
  return out


def kind_branches(path) -> list[tuple]:
  """(function, line, kind) of every condition in `path` that tests an op kind by name."""
  tree = ast.parse(path.read_text(), str(path))
  found = []

  def visit(node, func):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      func = node.name
    tests = []
    if isinstance(node, (ast.If, ast.IfExp, ast.While)):
      tests.append(node.test)
    if isinstance(node, ast.comprehension):
      tests += node.ifs
    for t in tests:
      found.extend((func, t.lineno, k) for k in _kind_comparisons(t))
    for child in ast.iter_child_nodes(node):
      visit(child, func)

  visit(tree, "<module>")
  return found


def test_no_if_chain_on_op_kinds_outside_the_tables():
  seen, bad = set(), []
  for path in sorted(PACKAGE.rglob("*.py")):
    rel = path.relative_to(PACKAGE).as_posix()
    if rel in TABLES:
      continue
    for func, line, kind in kind_branches(path):
      key = (rel, func, kind)
      if key in ALLOWED:
        seen.add(key)
      else:
        bad.append(f"densetnt_jax/{rel}:{line} ({func}) branches on op kind {kind!r}")
  assert not bad, ("an op kind is described outside its definition; put it in quant/ops.py (OPS) or, for the "
                   "ONNX forms, deploy/onnx_ops.py (ONNX_OPS):\n  " + "\n  ".join(bad))
  assert seen == set(ALLOWED), f"allow-list entries that no longer match anything: {set(ALLOWED) - seen}"


def test_the_check_catches_a_kind_branch(tmp_path):
  """The scan is not vacuous: an elif chain, a conditional expression, a comprehension filter and a recorded op's
  dict are caught; numpy dtype kinds, other keys and non-op strings are not."""
  src = tmp_path / "m.py"
  src.write_text(
      "def f(op, a, kind):\n"
      "  if op.kind == 'dense':\n    pass\n"
      "  elif op.kind in ('softmax', 'not_an_op'):\n    pass\n"
      "  y = 1 if 'relu' != op.kind else 2\n"
      "  z = [o for o in a if o.kind not in ('top_k',)]\n"
      "  if a.dtype.kind == 'f' or kind == 'cosine':\n    pass\n"
      "  if a['kind'] == 'quantize' or a['dtype'] == 'tile':\n    pass\n")
  assert [(k, line) for _, line, k in kind_branches(src)] == [("dense", 2), ("softmax", 4), ("relu", 6),
                                                              ("top_k", 7), ("quantize", 10)]


def test_onnx_forms_come_from_the_op_table():
  """Every kind's ONNX forms: its float reference and kernel from OPS; ONNX_OPS only overrides OPS kinds."""
  from densetnt_jax.deploy.onnx_ops import ONNX_OPS, onnx_op   # onnx: make test installs '.[dev,tensorboard,onnx]' 
  assert set(ONNX_OPS) <= set(OPS)
  assert all(d.kind == k for k, d in ONNX_OPS.items())
  assert all(onnx_op(types.SimpleNamespace(kind=k, name="x"), "float").kind == k for k in OPS)
  # a QDQ quantization point has codes the interpreter hands on; glue and host ops never are points
  assert not any(d.point for d in OPS.values() if d.glue or d.host)
  # a kind with no float reference is one whose kernel serves floats as it is: it reads no constants
  assert all(not d.consts for d in OPS.values() if d.float is None)
