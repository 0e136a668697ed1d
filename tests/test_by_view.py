"""``experiments.by_view``: top-1 of a model on each NW-UCLA view of real raw files."""

import json
import shutil

import numpy as np

from experiments import by_view
from stgcn_jax.inference import raw_input, sources

from conftest import shared_path
from test_predict import _save

FILES = [f"a{a:02d}_s01_e0{e}_v0{v}.json" for a in (1, 2) for e in (0, 1) for v in (1, 2, 3)]


def _src(tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  for name in FILES:
    shutil.copy(shared_path("data", "nw_ucla", "all_sqe", name), src)
  return src


def test_counts_hits_per_view_as_the_predictor_scores_them(tmp_path, capsys):
  model = _save(tmp_path / "model", "nw-ucla", 10, pipeline=False)
  src, out = _src(tmp_path), tmp_path / "views.json"
  assert by_view.main([f"--workdirs={model}", f"--src={src}", f"--out={out}"]) == 0
  table = json.loads(out.read_text())["models"][model]
  # The same hits, counted by hand from the predictor's scores of each file alone.
  predictor = sources.load_predictor(model)
  samples, _ = raw_input.read_samples(str(src), layout=predictor.layout)
  want = {"v01": 0, "v02": 0, "v03": 0}
  for s in samples:
    probs = predictor.predict([s.record], s.channels).probs[0]
    want[s.name[-3:]] += int(np.argmax(probs) == s.label)
  assert {v: (r["hits"], r["count"]) for v, r in table.items()} == {
      v: (h, 4) for v, h in want.items()}
  assert {s.label for s in samples} == {0, 1}
  assert f"{model}: v01 " in capsys.readouterr().out


def test_a_file_named_otherwise_is_one_error_line_naming_it(tmp_path, capsys):
  model = _save(tmp_path / "model", "nw-ucla", 10, pipeline=False)
  src = _src(tmp_path)
  (src / FILES[0]).rename(src / "clip.json")
  assert by_view.main([f"--workdirs={model}", f"--src={src}"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "clip.json" in err[0] and "cannot be read" in err[0]
