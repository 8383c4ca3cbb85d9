"""bin/demo.py is flags -> config -> `pipelines.run_demo`: its data steps run for real on a small synthetic city,
and its training and deployment steps are the library calls `make demo` has always made, in that order."""
import os
import subprocess
import sys
import types

from conftest import ROOT, load_config

from densetnt_jax import pipelines
from densetnt_jax.deploy import checker, compiler


def test_bin_demo_data_steps_write_the_city_pack_it_draw_scenes_and_resume(tmp_path):
  city, lmdb, workdir = tmp_path / "city", tmp_path / "lmdb", tmp_path / "run"
  cmd = [sys.executable, "bin/demo.py", "--train=False", "--num_train=64", "--num_val=3",
         f"--config.data.src_dir={city}", f"--config.data.lmdb_dir={lmdb}", f"--config.workdir={workdir}"]
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  assert len(os.listdir(city / "train" / "data")) == 64 and len(os.listdir(city / "val" / "data")) == 3
  assert "64 train scenes in batches of 64" in run.stdout
  assert sorted(os.listdir(workdir / "scenes")) == ["65.png", "66.png", "67.png"]

  # the same steps from a notebook: the city is there, so it is not written again; the packer skips what it has
  config = load_config("demo")
  config.data.src_dir, config.data.lmdb_dir, config.workdir = str(city), str(lmdb), str(workdir)
  out = pipelines.run_demo(config, num_train=64, num_val=3, train=False)
  assert sorted(out["datasets"]) == ["train", "val"] and len(out["datasets"]["val"]) == 3
  assert out["results"] == [] and out["pictures"] == []


def test_run_demo_makes_the_calls_of_make_demo_in_order(monkeypatch):
  """The training, quantization and deployment calls with the flags' defaults, as bin/demo.py made them before
  it became a library call (the 25-minute `make demo` is not run here)."""
  calls = []

  def record(name, result=None):
    def fn(*args, **kwargs):
      calls.append((name, args, kwargs))
      return result(*args) if callable(result) else result
    return fn

  config = load_config("demo")
  workdir = config.workdir
  datasets = dict(train="train-dataset", val="val-dataset")
  predictor, program = object(), object()
  monkeypatch.setattr(pipelines, "prepare_demo_data", record("prepare_demo_data", datasets))
  monkeypatch.setattr(pipelines, "describe_data", record("describe_data"))
  monkeypatch.setattr(pipelines, "train_and_evaluate", record("train_and_evaluate"))
  monkeypatch.setattr(pipelines.train_stages, "run_stage", record("run_stage"))
  monkeypatch.setattr(pipelines, "evaluate", record("evaluate", lambda config, workdir: {"stage": "x"}))
  monkeypatch.setattr(pipelines, "format_table", lambda results, **kwargs: "")
  monkeypatch.setattr(pipelines, "load_predictor", record("load", predictor))
  monkeypatch.setattr(pipelines, "render_predictions", record("render_predictions", ["infer/1.png"]))
  monkeypatch.setattr(checker, "load_program", record("load_program", program))
  monkeypatch.setattr(checker, "check_program", record("check_program", types.SimpleNamespace(ok=True)))
  monkeypatch.setattr(checker, "format_report", lambda report: "rows\nsummary\nPASS")
  monkeypatch.setattr(compiler, "run", record("compiler.run", 0))
  from densetnt_jax.deploy import onnx_check
  monkeypatch.setattr(onnx_check, "run", record("onnx_check.run", 0))
  monkeypatch.setattr(pipelines.align, "run", record("align.run", 0))
  monkeypatch.setattr(pipelines, "_write_pictures", record("write_pictures", ["pictures/curves.png"]))

  out = pipelines.run_demo(config)

  spec = checker.TargetSpec.from_config(config.target)
  assert calls == [
      ("prepare_demo_data", (config,), dict(num_train=2000, num_val=400)),
      ("describe_data", (datasets, config), {}),
      ("train_and_evaluate", (config, workdir), dict(stage="float")),
      ("evaluate", (config, workdir), dict(stage="float")),
      ("load", (workdir, "float"), dict(config=config)),
      ("render_predictions", (predictor, "val-dataset", os.path.join(workdir, "infer")), dict(num=6)),
      ("run_stage", (config, workdir, "calibration"), {}),
      ("evaluate", (config, workdir), dict(stage="calibration")),
      ("run_stage", (config, workdir, "qat"), {}),
      ("evaluate", (config, workdir), dict(stage="qat")),
      ("run_stage", (config, workdir, "int"), {}),
      ("evaluate", (config, workdir), dict(stage="int")),
      ("load_program", (workdir,), {}),
      ("check_program", (program, spec), {}),
      ("compiler.run", (config, workdir), dict(per_layer=False)),
      ("onnx_check.run", (config, workdir, "float"), dict(num_batches=2)),
      ("onnx_check.run", (config, workdir, "qat"), dict(num_batches=2)),
      ("onnx_check.run", (config, workdir, "int"), dict(num_batches=2)),
      ("align.run", (config, workdir), dict(num_batches=4, max_rows=8)),
      ("write_pictures", (config, workdir), {}),
  ]
  assert out["status"] == dict(checker=0, compile=0, float_onnx=0, qat_onnx=0, int_onnx=0, align=0)
  assert len(out["results"]) == 4 and out["pictures"] == ["pictures/curves.png"]

  calls.clear()
  pipelines.run_demo(config, quant=False)        # --quant=False: float, its pictures, nothing after
  assert [c[0] for c in calls] == ["prepare_demo_data", "describe_data", "train_and_evaluate", "evaluate", "load",
                                   "render_predictions", "write_pictures"]
  calls.clear()
  pipelines.run_demo(config, deploy=False)       # --deploy=False: no checker, compile or ONNX; align still runs
  assert [c[0] for c in calls][-2:] == ["align.run", "write_pictures"] and "compiler.run" not in [c[0] for c in calls]
