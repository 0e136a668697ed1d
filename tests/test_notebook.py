"""The notebooks under experiments/notebooks run end to end in a real Jupyter kernel (slow: they train).

``execute_notebook`` runs a copy of a notebook with nbclient and the ``python3`` kernel (ipykernel;
jupyter_client starts it with this interpreter, and the kernel inherits the environment, so it
imports this checkout), working directory a temporary folder, with the notebook's ``parameters``
cell overridden the way papermill does it: a cell of assignments inserted after it. A failing cell
fails the test with that cell's source and traceback.
"""

import json
import os
import re
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "experiments" / "notebooks"


def parameter_cell(nb) -> int:
  """The index of the cell tagged ``parameters``; a notebook without exactly one is an error."""
  found = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  assert len(found) == 1, f"expected one cell tagged 'parameters', found {len(found)}"
  return found[0]


def execute_notebook(name: str, tmp_path: Path, timeout: int = 900, **parameters):
  """Executes ``experiments/notebooks/<name>`` in ``tmp_path`` with ``parameters`` injected.

  The kernel's environment is this process's plus ``STGCN_JAX_DATA_DIR=tmp_path/data`` (the
  built-in dataset is generated there), without ``MPLBACKEND`` (so that ipykernel's inline backend
  shows the figures). Returns the executed notebook, also written to ``tmp_path/<name>``; asserts
  that the kernel ran this interpreter.
  """
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  assignments = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
  injected = nbformat.v4.new_code_cell(assignments, metadata={"tags": ["injected-parameters"]})
  nb.cells.insert(parameter_cell(nb) + 1, injected)
  nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
  env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
  env.update(STGCN_JAX_DATA_DIR=str(tmp_path / "data"),
             PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
  client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=timeout,
                                   resources={"metadata": {"path": str(tmp_path)}})
  try:
    client.execute(env=env)
  except nbclient.exceptions.CellExecutionError as err:
    pytest.fail(f"{name}: a cell failed:\n{err}", pytrace=False)
  finally:
    nbformat.write(nb, tmp_path / name)
  assert stdout(nb.cells[-1]).strip() == sys.executable
  return nb


def stdout(cell) -> str:
  """What a code cell printed (its stream outputs)."""
  return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def images(nb) -> int:
  """How many PNG images the notebook's cells displayed."""
  return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
             for o in c.outputs)


def test_notebooks_have_one_parameter_cell_and_guard_pip():
  for path in sorted(NOTEBOOKS.glob("*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    parameter_cell(nb)
    for cell in nb.cells:
      for line in cell.source.splitlines():
        if re.search(r"\bpip\b.*\binstall\b", line) and not line.lstrip().startswith("#"):
          # Only inside the Colab guard: an indented line under `if "google.colab" in sys.modules`.
          assert line.startswith("  ") and '"google.colab" in sys.modules' in cell.source, line


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path):
  runs = tmp_path / "runs"
  nb = execute_notebook("quickstart.ipynb", tmp_path, RUNS=str(runs), EPOCHS=2)
  printed = "".join(stdout(c) for c in nb.cells)
  top1 = [float(x) for x in re.findall(r"ctrgcn_s0\.\d+: top-1 ([\d.]+)", printed)]
  assert len(top1) == 2, printed[-3000:]
  assert max(top1) > 0.1, f"no run above chance (10 classes): {top1}"
  assert [pytest.approx(0.8, abs=0.01), pytest.approx(0.95, abs=0.01)] == [
      float(x) for x in re.findall(r"prunable sparsity ([\d.]+)", printed)]
  assert "ensemble:" in printed and "parameter budget:" in printed
  assert images(nb) == 2
  assert {p.name for p in (runs / "analysis").iterdir()} >= {
      "fig4_accuracy_vs_sparsity.png", "fig6_max_softmax.png", "runs.md"}


# The smoke size of ablations.ipynb: every section runs, with one level or two where it compares;
# the joint run's members under lax.map, which compiles one member instead of three.
ABLATIONS_SMOKE = dict(EPOCHS=2, WARMUP=1, SPARSITIES=(0.8,), WARMUPS=(0,), MASK_SPARSITY=0.8,
                       MASKS=("uniform", "erk"), LTH_SPARSITY=0.8,
                       EXTRA=("--config.sparsity.ensemble_batching=map",))


@pytest.mark.slow
def test_ablations_runs_end_to_end(tmp_path):
  runs = tmp_path / "runs"
  nb = execute_notebook("ablations.ipynb", tmp_path, RUNS=str(runs), **ABLATIONS_SMOKE)
  printed = "".join(stdout(c) for c in nb.cells)
  names = re.findall(r"^  (\w+[\d.]*): test top-1 ([\d.]+)%", printed, re.M)
  assert [n for n, _ in names] == ["dense", "generator", "warmup0", "lth0.8"], printed[-3000:]
  figures = {"ablations_penalty.png", "ablations_warmup.png", "ablations_masks.png",
             "ablations_lth.png"}
  assert {p.name for p in (runs / "figures").glob("*.png")} == figures
  assert images(nb) == len(figures)
  summary = json.loads((runs / "figures" / "ablations.json").read_text())
  assert [(m["sparsity"], m["lam"]) for m in summary["penalty"]] == [(0.8, 0.0), (0.8, 1.0)]
  assert [m["mask"] for m in summary["masks"]] == ["uniform", "erk"]
  assert list(summary["warmup"]) == ["0"]
  assert summary["dense"] > 10.0, f"the dense run is not above chance: {summary['dense']}%"
