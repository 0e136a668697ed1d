"""The library's docstrings name only things that exist.

Every backticked dotted name (``stgcn_jax.x.y``, ``training.step.make_train_step``,
``layers.Block``) in a module, class or function docstring under ``stgcn_jax/``, or in a comment
there, must resolve to a real module or attribute. What counts as a reference, so that prose and
code stay out:

* the token between the backticks is a plain dotted identifier, at least one dot, optionally ending
  in ``()`` (``a.b``, ``a.b.c()``); code such as ``config.sparsity.sparsity = 0.9`` or
  ``np.asarray(a) != 0`` is not a plain dotted identifier, and file names (``model.json``,
  ``docs/ARCHITECTURE.md``, ``step.py``) end in a file extension or hold a ``/``;
* its first part names the library: ``stgcn_jax``, ``experiments``, ``data_prep``, or the last part
  of a library module's name (``training``, ``step``, ``layers``, ``masks``, ``sparse``...); or it
  names a config field: ``config.<field path>`` or ``<part>.<field>`` with ``<part>`` one of the
  ``RunConfig`` parts (``data``, ``model``, ``optim``, ``sparsity``, ``loop``).

It resolves when, for some split ``prefix.rest``, a module whose dotted name is or ends with
``prefix`` has the attributes ``rest`` (a dataclass or Flax field without a default counts). A
short module name that several modules share resolves through any of them. ``model.X`` also
resolves when ``X`` is an attribute of the Flax model class (``model.apply``). A config reference
also resolves when it is a field path of ``RunConfig`` or ``TrainConfig``
(``config.loop.precise_bn_batches``, ``config.sparsity.ensemble_sparsities``,
``optim.steps_per_epoch``).
"""

import ast
import dataclasses
import importlib
import io
import pkgutil
import re
import tokenize
from pathlib import Path

import pytest

import stgcn_jax
from stgcn_jax.models.base import Recognizer
from stgcn_jax.training.config import RunConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "stgcn_jax"
_BACKTICKED = re.compile(r"``([^`\n]+)``|(?<!`)`([^`\n]+)`(?!`)")
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?:\(\))?")
_FILE_SUFFIXES = {"py", "md", "json", "jsonl", "npz", "npy", "txt", "yaml", "yml", "pkl", "pickle",
                  "skeleton", "csv", "ipynb", "toml", "cfg", "pb", "zip", "tar", "gz", "mp4",
                  "avi", "pth", "pt", "ckpt"}


def _library_modules() -> list[str]:
  names = ["stgcn_jax"]
  for info in pkgutil.walk_packages(stgcn_jax.__path__, "stgcn_jax."):
    names.append(info.name)
  for program in ("experiments", "data_prep"):
    for path in sorted((REPO / program).rglob("*.py")):
      rel = path.relative_to(REPO).with_suffix("")
      parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
      names.append(".".join(parts))
  return names


MODULES = _library_modules()
CONFIGS = (RunConfig(), TrainConfig())
ROOTS = ({name.split(".")[-1] for name in MODULES} | {"stgcn_jax", "experiments", "data_prep"} |
         {"config"} | {f.name for f in dataclasses.fields(RunConfig)})


def docstrings(path: Path):
  """``(line, text)`` of the module's, every class's and every function's docstring in ``path``,
  and of every comment."""
  source = path.read_text()
  tree = ast.parse(source, filename=str(path))
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      doc = ast.get_docstring(node, clean=False)
      if doc:
        yield getattr(node, "lineno", 1), doc
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.COMMENT:
      yield tok.start[0], tok.string


def references(doc: str) -> list[str]:
  """The backticked tokens of ``doc`` that are references to the library (the module's rule)."""
  out = []
  for match in _BACKTICKED.finditer(doc):
    token = (match.group(1) or match.group(2)).strip()
    if not _DOTTED.fullmatch(token):
      continue
    token = token.removesuffix("()")
    parts = token.split(".")
    if parts[-1].lower() in _FILE_SUFFIXES or parts[0] not in ROOTS:
      continue
    out.append(token)
  return out


def _has(obj, name: str):
  """``getattr(obj, name)``, or a marker for a dataclass / Flax field without a default."""
  if hasattr(obj, name):
    return getattr(obj, name)
  fields = getattr(obj, "__dataclass_fields__", None) or {}
  if name in fields or name in getattr(obj, "__annotations__", {}):
    return dataclasses.MISSING
  raise AttributeError(name)


def _config_field(token: str) -> bool:
  """``token`` (``config.a.b`` or ``a.b``) is a field path of ``RunConfig`` or ``TrainConfig``."""
  parts = token.split(".")
  parts = parts[1:] if parts[0] == "config" else parts
  for obj in CONFIGS:
    for name in parts:
      if not dataclasses.is_dataclass(obj) or name not in {f.name for f in dataclasses.fields(obj)}:
        break
      obj = getattr(obj, name)
    else:
      return True
  return False


def resolves(token: str) -> bool:
  if _config_field(token):
    return True
  if token.startswith("model."):
    try:
      obj = Recognizer
      for name in token.split(".")[1:]:
        obj = _has(obj, name)
      return True
    except AttributeError:
      pass
  parts = token.split(".")
  for i in range(len(parts), 0, -1):
    prefix, rest = ".".join(parts[:i]), parts[i:]
    for module in MODULES:
      if module != prefix and not module.endswith("." + prefix):
        continue
      try:
        obj = importlib.import_module(module)
        for name in rest:
          obj = _has(obj, name)
      except (ImportError, AttributeError):
        continue
      return True
  return False


def test_rule_picks_references_and_skips_prose():
  doc = ("``training.step.make_train_step`` and `layers.Block` and ``stgcn_jax.export.sparse``; "
         "not ``model.json``, ``docs/ARCHITECTURE.md``, ``np.packbits``, ``a.b = 1``, ``step.py``")
  assert references(doc) == ["training.step.make_train_step", "layers.Block",
                             "stgcn_jax.export.sparse"]


def test_resolution_fails_on_a_missing_name():
  assert resolves("training.step.make_train_step")
  assert resolves("stgcn_jax.models.layers.Conv.impl")
  assert not resolves("training.step.no_such_function")
  assert not resolves("stgcn_jax.no_such_module")
  assert not resolves("models.split_options")   # the stale name models/base.py cited
  assert resolves("config.sparsity.ensemble_sparsities") and resolves("loop.precise_bn_batches")
  assert not resolves("config.ensemble_sparsities") and not resolves("optim.no_such_field")


def test_every_backticked_library_name_resolves():
  stale = []
  for path in sorted(LIBRARY.rglob("*.py")):
    for line, doc in docstrings(path):
      for token in references(doc):
        if not resolves(token):
          stale.append(f"{path.relative_to(REPO)}:{line}: ``{token}``")
  assert not stale, "docstrings name things that do not exist:\n" + "\n".join(stale)


def test_package_docstrings_list_every_module():
  """A package docstring that lists its modules (``name.py``) lists all of them."""
  missing = []
  for init in sorted(LIBRARY.rglob("__init__.py")):
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    listed = set(re.findall(r"``(\w+)\.py``", doc))
    if not listed:
      continue
    modules = {p.stem for p in init.parent.glob("*.py") if p.name != "__init__.py"}
    missing += [f"{init.relative_to(REPO)}: {m}.py" for m in sorted(modules - listed)]
  assert not missing, "package docstrings that leave modules out:\n" + "\n".join(missing)
