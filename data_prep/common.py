"""Shared pieces of the converter programs: the command-line runner, its flags and the summary.

The raw files are read by the library's parsers (``stgcn_jax.data.formats``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

from absl import flags

from stgcn_jax import cli
from stgcn_jax.data import ConversionReport
from stgcn_jax.errors import UserError

__all__ = ["define_base_flags", "parse_flags", "run_cli", "dedupe", "print_report",
           "default_data_dir"]


def default_data_dir() -> str:
  from stgcn_jax.data import default_data_dir as ddd  # pylint: disable=g-import-not-at-top
  return ddd()


def define_base_flags(fv: flags.FlagValues, *, name_default: str | None) -> None:
  """``--out``, ``--name`` and ``--overwrite`` on ``fv``; converters add ``--src`` etc. (absl flags,
  see :mod:`stgcn_jax.cli`; ``--a-b`` is accepted for every ``--a_b``)."""
  flags.DEFINE_string("out", None, "root of the tfds store (default $STGCN_JAX_DATA_DIR or "
                      "~/.stgcn_jax/data)", flag_values=fv)
  flags.DEFINE_string("name", name_default, "dataset name in the store, [a-z][a-z0-9_]*"
                      + (f" (default {name_default})" if name_default else ""),
                      flag_values=fv, required=name_default is None)
  flags.DEFINE_bool("overwrite", False, "replace an existing dataset", flag_values=fv)


def parse_flags(define_flags: Callable[[flags.FlagValues], None], argv: Sequence[str] | None,
                doc: str | None, *, name_default: str | None) -> flags.FlagValues:
  """The converter's flags (the base flags and those ``define_flags`` adds) parsed from ``argv``;
  a mistake raises :class:`stgcn_jax.cli.UsageError`, which :func:`run_cli` reports in one line."""
  def define(fv: flags.FlagValues) -> None:
    define_base_flags(fv, name_default=name_default)
    define_flags(fv)
  return cli.parse(define, argv, doc=doc)


def run_cli(main: Callable[[Sequence[str] | None], str | list[str]],
            argv: Sequence[str] | None = None) -> int:
  """Runs a converter; a user mistake (a ``UserError``: a flag, a data or layout error) prints one
  line (no traceback) and returns 2; anything else is a bug and propagates with its traceback."""
  start = time.perf_counter()
  try:
    paths = main(argv)
  except UserError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  paths = [paths] if isinstance(paths, str) else paths
  for path in paths:
    print(f"wrote {path}")
  print(f"done in {time.perf_counter() - start:.1f} s")
  return 0


def dedupe(items: list, key: Callable, where: Callable, report: ConversionReport) -> list:
  """Keeps the first item of every ``key``; later duplicates are rejected, naming both."""
  first, out = {}, []
  for item in items:
    k = key(item)
    if k in first:
      report.reject("duplicate", f"{where(item)}: duplicate sample name {k!r} (first seen in "
                                 f"{where(first[k])}); the first one is kept")
      continue
    first[k] = item
    out.append(item)
  return out


def print_report(report: ConversionReport, split_counts: dict) -> None:
  counts = ", ".join(f"{s}: {n}" for s, n in split_counts.items())
  print(f"splits: {counts}")
  print(report.summary())
