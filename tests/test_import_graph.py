"""The library's import graph: no cycle between ``stgcn_jax`` modules, and no ``stgcn_jax`` module
that imports the programs (``experiments``, ``data_prep``); no cycle within a program either.

The graph is read from the source with ``ast`` (nothing is imported), every ``import`` counted
wherever it is written: at module level, inside functions, under ``if``. ``from P import N`` is an
edge to the module ``P.N`` when that is a module, else to ``P``; ``import P.Q`` is an edge to
``P.Q``. An edge to a package is an edge to its ``__init__``; importing ``P.Q`` runs ``P``'s
``__init__`` first, but that is not counted as an edge (Python finishes a package whose submodule
is being imported), so a package's ``__init__`` may re-export its own submodules.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PROGRAMS = ("experiments", "data_prep")


def module_files(root: pathlib.Path, package: str) -> dict[str, pathlib.Path]:
  """``{dotted module name: file}`` of every module of ``package`` under ``root``."""
  out = {}
  for path in sorted((root / package).rglob("*.py")):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts.pop()
    out[".".join(parts)] = path
  return out


def imported_names(path: pathlib.Path, module: str) -> list[tuple[str, int]]:
  """``(dotted name, line)`` of everything ``path`` imports; ``from P import N`` gives ``P.N``
  (which :func:`import_graph` resolves to a module or to ``P``)."""
  is_package = path.name == "__init__.py"
  package = module if is_package else module.rpartition(".")[0]
  names = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names += [(alias.name, node.lineno) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")
        base = base[:len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
      else:
        source = node.module
      names += [(f"{source}.{alias.name}", node.lineno) for alias in node.names]
  return names


def import_graph(root: pathlib.Path, package: str):
  """``(edges, program_imports)``: ``edges[m]`` is the set of ``package`` modules ``m`` imports;
  ``program_imports`` lists ``"module:line imports name"`` for each import of a program."""
  files = module_files(root, package)
  edges: dict[str, set[str]] = {m: set() for m in files}
  programs = []
  for module, path in files.items():
    for name, line in imported_names(path, module):
      top = name.split(".")[0]
      if top in PROGRAMS:
        programs.append(f"{module}:{line} imports {name}")
      elif top == package:
        target = name
        while target not in files:        # from P import attribute -> P
          target = target.rpartition(".")[0]
        if target != module:
          edges[module].add(target)
  return edges, sorted(set(programs))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan), each sorted."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(edges[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(edges):
    if v not in index:
      visit(v)
  return found


def test_library_has_no_import_cycle():
  edges, _ = import_graph(REPO, "stgcn_jax")
  assert len(edges) > 50          # the walk found the library
  assert cycles(edges) == []


def test_library_never_imports_the_programs():
  _, programs = import_graph(REPO, "stgcn_jax")
  assert programs == []


@pytest.mark.parametrize("program", PROGRAMS)
def test_programs_have_no_import_cycle(program):
  edges, _ = import_graph(REPO, program)
  assert cycles(edges) == []


@pytest.fixture
def tangled(tmp_path):
  """A package with a cycle through a function-level import and a program import."""
  pkg = tmp_path / "stgcn_jax"
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "sub" / "__init__.py").write_text("from stgcn_jax.sub import b\n")
  (pkg / "a.py").write_text("from stgcn_jax.sub.b import thing\n")
  (pkg / "sub" / "b.py").write_text("thing = 1\n\ndef f():\n  from .. import a\n  return a\n")
  (pkg / "c.py").write_text("import stgcn_jax.a\n\ndef g():\n  from experiments import run\n")
  return tmp_path


def test_the_checks_find_a_function_level_cycle_and_a_program_import(tangled):
  edges, programs = import_graph(tangled, "stgcn_jax")
  assert edges["stgcn_jax.sub.b"] == {"stgcn_jax.a"}
  assert edges["stgcn_jax.sub"] == {"stgcn_jax.sub.b"}     # a package re-exporting its own
  assert cycles(edges) == [["stgcn_jax.a", "stgcn_jax.sub.b"]]
  assert programs == ["stgcn_jax.c:4 imports experiments.run"]
