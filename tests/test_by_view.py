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


def test_a_later_call_adds_models_and_the_readme_table_has_them_all(tmp_path):
  models = [_save(tmp_path / name, "nw-ucla", 10, seed=i, pipeline=False)
            for i, name in enumerate(("m_a", "m_b"))]
  src, out, readme = _src(tmp_path), tmp_path / "views.json", tmp_path / "README.md"
  readme.write_text("intro\n<!-- report:nw_ucla_by_view begin -->\nold\n"
                    "<!-- report:nw_ucla_by_view end -->\nafter\n")
  for model in models:
    assert by_view.main([f"--workdirs={model}", f"--src={src}", f"--out={out}",
                         f"--readme={readme}"]) == 0
  table = json.loads(out.read_text())["models"]
  assert list(table) == models
  text = readme.read_text()
  assert "old" not in text and text.startswith("intro\n") and text.endswith("after\n")
  rows = [line for line in text.splitlines() if line.startswith("| m_")]
  assert [r.split(" | ")[0] for r in rows] == ["| m_a", "| m_b"]
  assert rows[1].split(" | ")[1:] == [f"{100 * table[models[1]][v]['top1']:.1f}"
                                     for v in ("v01", "v02")] + [
      f"{100 * table[models[1]]['v03']['top1']:.1f} |"]
  # A file of another --src is not overwritten.
  other = tmp_path / "other"
  shutil.copytree(src, other)
  assert by_view.main([f"--workdirs={models[0]}", f"--src={other}", f"--out={out}"]) == 2
  assert list(json.loads(out.read_text())["models"]) == models
