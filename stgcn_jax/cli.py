"""The one command-line style of the programs in ``experiments/`` and ``data_prep/``: absl flags.

A program defines its flags on a private ``flags.FlagValues()``, never on absl's global
``flags.FLAGS``, so that any number of programs can be imported, and their ``main(argv)`` called,
in one process without a duplicate-flag clash::

  def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("src", None, "the input", flag_values=fv, required=True)

  def main(argv=None) -> int:
    fv = cli.parse(define_flags, argv, doc=__doc__)   # argv: the arguments, without the program
    ... fv.src ...

  if __name__ == "__main__":
    sys.exit(cli.run(main))

:func:`parse` reads the flags (``argv`` None: ``sys.argv[1:]``); ``--help`` (``-h``,
``--helpfull``) prints ``doc`` and the flags and exits with status 0. Flag names are spelled with
underscores (absl's convention); the dashed spelling of a name is accepted as the same flag
(``--label-base`` is ``--label_base``; ``--no-overwrite`` and ``--no_overwrite`` are
``--nooverwrite``), so the spellings of the former argparse programs keep working. A user mistake
(unknown flag, bad value, missing required flag, a stray positional argument) raises
:class:`UsageError`. :func:`run` turns it, and every other :class:`stgcn_jax.errors.UserError` (a
bad config field, file or record, which the library raises), into one ``error: ...`` line on stderr
and exit status 2; any other exception is a bug and propagates with its traceback.

This module holds no program; it only parses flags for the programs outside the library.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence

from absl import flags
from stgcn_jax.errors import Stopped, UserError

__all__ = ["UsageError", "UserError", "parse", "run", "normalize_argv"]

_HELP = ("-h", "--help", "--helpshort", "--helpfull", "-?")


class UsageError(UserError):
  """A mistake on the command line (one line: the flag, and what is wrong)."""


def _is_bool(fv: flags.FlagValues, name: str) -> bool:
  return isinstance(fv[name], flags.BooleanFlag)


def normalize_argv(fv: flags.FlagValues, argv: Sequence[str]) -> list[str]:
  """``argv`` with every dashed flag name that names a flag of ``fv`` in its underscore spelling
  (``--label-base=0`` -> ``--label_base=0``; ``--no-x`` / ``--no_x`` -> ``--nox`` for a boolean
  ``x``). Values are left alone, also a value given after its flag (``--num-classes -3``), and so
  is everything after ``--``."""
  known = set(fv)
  out: list[str] = []
  value_next = False
  for i, arg in enumerate(argv):
    if value_next:
      out.append(arg)
      value_next = False
      continue
    if arg == "--":
      out.extend(argv[i:])
      break
    if not arg.startswith("-") or arg == "-":
      out.append(arg)
      continue
    dashes = "--" if arg.startswith("--") else "-"
    name, eq, value = arg[len(dashes):].partition("=")
    canonical = name.replace("-", "_")
    if canonical not in known:
      for prefix in ("no_", "no"):
        base = canonical[len(prefix):]
        if canonical.startswith(prefix) and base in known and _is_bool(fv, base):
          canonical = "no" + base
          break
    out.append(f"{dashes}{canonical}{eq}{value}")
    flag = canonical if canonical in known else None
    value_next = bool(flag) and not eq and not _is_bool(fv, flag)
  return out


def parse(define_flags: Callable[[flags.FlagValues], None], argv: Sequence[str] | None = None,
          *, doc: str | None = None, prog: str | None = None, passthrough: bool = False):
  """A fresh ``FlagValues`` with the flags that ``define_flags`` defines, parsed from ``argv``
  (the arguments without the program name; None: ``sys.argv[1:]``). Raises :class:`UsageError`.
  With ``passthrough`` the arguments after ``--`` are not an error: ``(flag_values, rest)``."""
  fv = flags.FlagValues()
  define_flags(fv)
  argv = list(sys.argv[1:] if argv is None else argv)
  prog = prog or sys.argv[0]
  if any(a in _HELP for a in argv[:argv.index("--") if "--" in argv else len(argv)]):
    text = (doc or "").strip()
    lines = [line for line in fv.get_help(include_special_flags=False).splitlines()
             if line.startswith(" ")]            # the flags, without absl's module headings
    print((text + "\n\n" if text else "") + "flags:\n" + "\n".join(lines))
    raise SystemExit(0)
  try:
    rest = fv([prog, *normalize_argv(fv, argv)])
  except flags.Error as err:
    message = " ".join(str(err).split())
    missing = re.fullmatch(r"flag --(\w+)=None: Flag --\w+ must have a value other than None\.",
                           message)
    if missing:
      message = f"--{missing.group(1)} is required"
    raise UsageError(f"{message} (--help lists the flags)") from None
  if passthrough:
    return fv, list(rest[1:])
  if len(rest) > 1:
    raise UsageError(f"unexpected arguments {rest[1:]} (--help lists the flags)")
  return fv


def run(main: Callable[[Sequence[str] | None], object],
        argv: Sequence[str] | None = None) -> int:
  """Calls ``main(argv)``: a :class:`UserError` (:class:`UsageError` included) is one
  ``error: ...`` line on stderr and status 2, a :class:`Stopped` one ``stopped: ...`` line and its
  status (143), else the status ``main`` returned (an int) or 0.
  Any other exception is a bug: it propagates, with its traceback."""
  try:
    status = main(argv)
  except UserError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  except Stopped as err:   # asked to stop (SIGTERM), saved: one line, the status of a killed process
    print(f"stopped: {err}", file=sys.stderr)
    return err.status
  return status if isinstance(status, int) else 0
