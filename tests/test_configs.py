"""configs/argo.py: variants compose (data x size x target), and every variant string that existed before they
composed ("", demo, sample, real, tiny) gives the same config, field for field."""
import importlib.util
import inspect
import os
import re

import pytest
from absl import flags
from ml_collections import config_flags

from conftest import ROOT, load_config

from densetnt_jax import pipelines


def flat(config) -> dict:
  def walk(d, prefix):
    for k, v in d.items():
      if isinstance(v, dict):
        yield from walk(v, f"{prefix}{k}.")
      else:
        yield f"{prefix}{k}", v
  return dict(walk(config.to_dict(), ""))


def changed(config, base) -> dict:
  a, b = flat(config), flat(base)
  assert set(a) == set(b), set(a) ^ set(b)
  return {k: v for k, v in a.items() if v != b[k] or type(v) is not type(b[k])}


BASE = load_config("")

# What each variant changed from the defaults before the composition (configs/argo.py's if/elif on the variant):
# exactly these fields, with these values and types.
CHANGED = {
    "demo": {
        "workdir": "runs/demo", "data.src_dir": "data/synthetic_city", "data.lmdb_dir": "data/synthetic_lmdb",
        "train.batch_size": 32, "train.epochs": 12, "train.log_every_steps": 10, "train.checkpoint_every_steps": 200,
        "quant.observer": "minmax", "qat.epochs": 2, "qat.learning_rate": 1e-4, "qat.decay_epochs": (1,),
    },
    "sample": {
        "workdir": "runs/sample", "data.lmdb_dir": "data/sample_lmdb",
        "data.src_dir": os.environ.get("ARGOVERSE1_SHARED", "../shared/data/argoverse1"),
        "train.batch_size": 16, "train.eval_batch_size": 33, "train.epochs": 10, "train.log_every_steps": 5,
        "train.checkpoint_every_steps": 100,
    },
    "real": {
        "workdir": "runs/real", "data.src_dir": "data/argoverse1_real", "data.lmdb_dir": "data/real_lmdb",
        "train.batch_size": 32, "train.eval_batch_size": 33, "train.epochs": 20, "train.weight_decay": 0.05,
        "train.log_every_steps": 20, "train.checkpoint_every_steps": 200,
        "qat.epochs": 3, "qat.learning_rate": 1e-4, "qat.decay_epochs": (2,),
    },
    "tiny": {
        "workdir": "runs/tiny", "data.max_traj_num": 8, "data.max_lane_num": 16, "data.max_goals_num": 256,
        "model.depth": 1, "model.hidden_size": 16, "model.num_traj": 8, "model.target_graph_depth": 1,
        "model.top_k": 16, "model.dense_seeds": 0, "model.dense_points": 40, "model.lane_scoring": False,
        "postprocess.selection": "nms", "postprocess.endpoint": "model",
        "train.batch_size": 4, "train.eval_batch_size": 4, "train.epochs": 1, "train.log_every_steps": 1,
        "qat.epochs": 1, "qat.decay_epochs": (0.5,), "quant.calibration_batches": 2,
    },
}


def test_the_defaults():
  c = BASE
  assert (c.workdir, c.data.src_dir, c.data.lmdb_dir) == ("runs/argo", "data/argoverse1", "data/argoverse1_lmdb")
  assert (c.model.depth, c.model.hidden_size, c.model.dense_seeds, c.postprocess.selection) == (3, 128, 150, "fde")
  assert (c.train.batch_size, c.train.epochs, c.quant.observer, c.qat.epochs) == (64, 30, "mse", 10)
  assert c.target.name == "j6e-class" and c.target.op_bits.dense == (8, 16) and c.target.peak_int8_tops == 80.0


@pytest.mark.parametrize("variant", sorted(CHANGED))
def test_every_old_variant_changes_exactly_its_fields(variant):
  assert changed(load_config(variant), BASE) == CHANGED[variant]


def test_the_order_and_spelling_of_a_variant_do_not_matter():
  want = load_config("demo,tiny").to_dict()
  for spelling in ("tiny,demo", "data=demo,size=tiny", " size=tiny , demo ", "demo,tiny,target=j6e"):
    assert load_config(spelling).to_dict() == want, spelling
  assert load_config("data=argo,size=full,target=j6e").to_dict() == BASE.to_dict()


@pytest.mark.parametrize("data,size", [("demo", "tiny"), ("real", "tiny"), ("sample", "tiny")])
def test_a_composed_variant_is_its_data_then_its_size(data, size):
  """Every field as the size sets it, else as the data sets it, else the default; the workdir names both."""
  want = {**CHANGED[data], **CHANGED[size], "workdir": f"runs/{data}_{size}"}
  assert changed(load_config(f"{data},{size}"), BASE) == want


def test_the_int8_target_changes_only_the_target_and_shares_the_workdir():
  demo = load_config("demo")
  int8 = load_config("demo,target=int8")
  want = {"target.name": "j6e-class-int8"}
  want.update({f"target.op_bits.{kind}": (8,) for kind, bits in demo.target.op_bits.items() if bits != (0,)})
  assert changed(int8, demo) == want
  assert int8.workdir == "runs/demo" and int8.target.op_bits.dense_grid_mask == (0,)


@pytest.mark.parametrize("variant,workdir", [
    ("", "runs/argo"), ("demo", "runs/demo"), ("tiny", "runs/tiny"), ("size=tiny,data=sample", "runs/sample_tiny"),
    ("target=int8", "runs/argo"), ("real,tiny,target=int8", "runs/real_tiny"),
])
def test_the_workdir_names_the_non_default_data_and_size(variant, workdir):
  assert load_config(variant).workdir == workdir


@pytest.mark.parametrize("variant,message", [
    ("nosuch", "unknown config variant 'nosuch'; expected a comma-separated choice per axis (data argo|demo|sample"),
    ("size=demo", "unknown config variant 'demo' for size"),
    ("colour=red", "unknown config variant axis 'colour' in 'colour=red'"),
    ("demo,real", "config variant 'demo,real' picks data twice (demo, real); give one"),
    ("tiny,size=full", "picks size twice (tiny, full)"),
])
def test_a_bad_variant_says_what_is_wrong_and_what_is_expected(variant, message):
  with pytest.raises(ValueError, match=re.escape(message)) as e:
    load_config(variant)
  assert "unknown" not in message or "e.g. configs/argo.py:demo,target=int8" in str(e.value)


def _module():
  spec = importlib.util.spec_from_file_location("argo_config_module", ROOT / "configs" / "argo.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_choice_documents_its_command_and_what_it_gives():
  module = _module()
  for axis, names in module.AXES.items():
    for name, fn in names.items():
      doc = inspect.getdoc(fn) or ""
      assert re.search(r"^ +(python|make|pytest) \S+", doc, re.M), f"{axis}={name}: no command line"
      assert re.search(r"\bgives\b|Not run here", doc), f"{axis}={name}: no result"
      assert f"{axis}={name}" in module.describe()


def test_the_config_flag_reads_a_composed_variant_and_overrides_on_top():
  argv = ["prog", f"--config={ROOT / 'configs' / 'argo.py'}:demo,target=int8", "--config.train.epochs=3"]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
  values(argv)
  assert (values.config.workdir, values.config.target.name, values.config.train.epochs) == (
      "runs/demo", "j6e-class-int8", 3)
  want = load_config("demo,target=int8")
  want.train.epochs = 3
  assert values.config.to_dict() == want.to_dict()


def test_a_notebook_gets_what_the_config_flag_gives():
  spec = f"{ROOT / 'configs' / 'argo.py'}:sample,tiny"
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=["prog", f"--config={spec}"])
  values(["prog", f"--config={spec}"])
  assert pipelines.config_from(spec).to_dict() == values.config.to_dict()
