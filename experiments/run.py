"""Train and evaluate one model: ``python -m experiments.run --backbone=ctrgcn --sparsity=0.95``.

With no other flag this trains a reduced CTR-GCN on the built-in synthetic dataset (generated on
first use, no download) with the sparse generator at 95% sparsity, evaluates it with the 10-clip test
and writes ``results.json`` and ``scores.npz`` to the workdir. The shortcut flags below set fields of
``experiments/configs/default.py``; ``--config=experiments/configs/default.py:ntu60_xsub`` picks a
variant and ``--config.PART.FIELD=VALUE`` overrides any field (``--config.optim.num_epochs=20``;
the flat ``--config.FIELD`` of earlier versions is read as its nested name, with a note). Running
again with the same ``--workdir`` resumes.

On several processes (hosts) every process runs the same command with ``--coordinator_address``
(process 0's HOST:PORT), ``--num_processes`` and its own ``--process_id`` (README, "Several hosts").
"""

import difflib
import os
import re
import sys

from absl import flags, logging
from ml_collections import config_flags

from stgcn_jax import cli, runtime

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "default.py")
# Shortcuts for the fields users change most (None = keep the config's value).
_SHORTCUTS = {
    "backbone": (flags.DEFINE_string, "stgcn, aagcn, ctrgcn or dgstgcn"),
    "sparsity": (flags.DEFINE_string, "fraction of prunable weights removed, in [0, 1); 0 = dense; "
                 "auto[:TOLERANCE]: train the levels of config.sparsity.ensemble_sparsities jointly and keep "
                 "the sparsest within TOLERANCE (default 1) points of the best validation top-1"),
    "mode": (flags.DEFINE_string,
             "generator (default), dense, lth (with --pretrained), ensemble or variants"),
    "variants": (flags.DEFINE_string, "mode variants: the members, e.g. 's=0.8,0.95;lambda=0,1' "
                 "(the product; axes s, lambda, mask, seed, init_seed, mask_seed; '|' joins "
                 "products)"),
    "mask_method": (flags.DEFINE_string, "uniform, erk, global, per_block or predefined"),
    "mask_path": (flags.DEFINE_string, "mask file for mask_method=predefined"),
    "warmup_epochs": (flags.DEFINE_integer, "dense warm-up epochs (0 = no warm-up)"),
    "penalty_lambda": (flags.DEFINE_float, "group-lasso weight (0 = no penalty)"),
    "lambda_schedule": (flags.DEFINE_string, "constant or ramp"),
    "modality": (flags.DEFINE_string, "j, b, jm or bm"),
    "dataset": (flags.DEFINE_string, "synthetic, nw_ucla, ntu60_xsub, ... (a converted dataset)"),
    "data_dir": (flags.DEFINE_string, "where converted datasets live"),
    "epochs": (flags.DEFINE_integer, "number of epochs (config.optim.num_epochs)"),
    "batch_size": (flags.DEFINE_integer, "global batch size"),
    "learning_rate": (flags.DEFINE_float, "learning rate for batch 128 (scaled linearly)"),
    "seed": (flags.DEFINE_integer, "random seed (init, masks, data order)"),
    "pretrained": (flags.DEFINE_string, "model checkpoint dir (python -m experiments.convert)"),
}
# Several processes (stgcn_jax.distributed; each also read from $STGCN_JAX_<NAME>).
_LAUNCH = {
    "coordinator_address": (flags.DEFINE_string,
                            "HOST:PORT of process 0, for a run on several processes"),
    "num_processes": (flags.DEFINE_integer, "number of processes"),
    "process_id": (flags.DEFINE_integer, "this process's id, 0 .. N-1"),
    "init_timeout": (flags.DEFINE_integer,
                     "seconds to wait for every process to start (default 300)"),
    "peer_timeout": (flags.DEFINE_integer,
                     "seconds after which a silent process counts as dead (default 60)"),
}
# The config field each shortcut sets (its flat name: ``training.config.LEGACY_NAMES``).
_FIELD = {"epochs": "optim.num_epochs", "seed": "seed"}
# What ml_collections raises for a --config.FIELD it cannot set (an unknown or misspelt field, an
# index out of range, a config file that does not load), besides absl's flags.Error.
_CONFIG_FLAG_ERRORS = (flags.Error, AttributeError, KeyError, IndexError, TypeError, ValueError,
                       OSError)


def define_flags(fv: flags.FlagValues, argv=()) -> None:
  """The shortcut flags, ``--workdir`` and ``--config`` (whose ``--config.PART.FIELD`` overrides
  ml_collections reads from ``argv``, the arguments without the program name)."""
  for name, (define, help_) in {**_SHORTCUTS, **_LAUNCH}.items():
    define(name, None, help_, flag_values=fv)
  flags.DEFINE_string("workdir", None, "Output directory (default runs/<run name>).",
                      flag_values=fv)
  config_flags.DEFINE_config_file(
      "config", _DEFAULT_CONFIG,
      "Config file (optionally FILE:VARIANT); fields can be overridden with "
      "--config.PART.FIELD=VALUE (e.g. --config.optim.learning_rate=0.4).",
      flag_values=fv, lock_config=True,
      sys_argv=["experiments.run", *cli.normalize_argv(fv, list(argv))])


def _override(argv, field: str) -> str:
  """The ``--config.PATH`` of ``argv`` whose last part is ``field`` (else ``--config.field``)."""
  for arg in argv:
    name = arg.split("=", 1)[0].lstrip("-")
    if name.startswith("config.") and name.split(".")[-1] == field:
      return "--" + name
  return f"--config.{field}"


def _config_error(err: BaseException, argv) -> str:
  """One line for what ml_collections raised: the field (and its "did you mean" hint), or the
  last line of a config file that does not load."""
  text = str(err).replace("\\'", "'").replace("\\n", "\n")
  lines = [l.strip(" '\"") for l in text.splitlines() if l.strip(" '\"")]
  hint = re.search(r'Did you mean "([\w.]+)" instead of "([\w.]+)"', text)
  if hint:
    flag = _override(argv, hint.group(2))
    return (f"{flag}: the config has no field {hint.group(2)!r}; did you mean "
            f"{flag[:-len(hint.group(2))]}{hint.group(1)}? (experiments/configs/default.py "
            "lists the fields)")
  if isinstance(err, (AttributeError, KeyError)) and lines:
    flag = _override(argv, lines[0])
    name = flag[len('--config.'):]
    from stgcn_jax.training.config import LEGACY_NAMES  # pylint: disable=import-outside-toplevel
    close = difflib.get_close_matches(name, LEGACY_NAMES, n=1)
    hint = f"; did you mean --config.{LEGACY_NAMES[close[0]]}?" if "." not in name and close else ""
    return (f"{flag}: the config has no field {name!r}{hint} "
            "(experiments/configs/default.py lists the fields)")
  where = next((a for a in argv if re.match(r"-{1,2}config(=|$)", a)), "--config")
  last = [l.strip() for l in text.splitlines() if l.strip()]
  return f"{where}: {last[-1] if last else type(err).__name__} (--help lists the flags)"


def _nested_spelling(argv: list[str]) -> list[str]:
  """``argv`` with each ``--config.FIELD`` of the flat config of earlier versions in its nested
  spelling (``--config.val_fraction=0`` -> ``--config.data.val_fraction=0``), one note each."""
  from stgcn_jax.training.config import LEGACY_NAMES  # pylint: disable=import-outside-toplevel
  out = []
  for arg in argv:
    match = re.fullmatch(r"(--?config\.)(\w+)((?:=.*)?)", arg, re.DOTALL)
    if arg == "--":
      out += argv[len(out):]
      break
    if match and match.group(2) in LEGACY_NAMES:
      new = f"{match.group(1)}{LEGACY_NAMES[match.group(2)]}{match.group(3)}"
      print(f"note: {match.group(1)}{match.group(2)} is now {new.split('=', 1)[0]}",
            file=sys.stderr)
      arg = new
    out.append(arg)
  return out


def _parse(argv) -> flags.FlagValues:
  argv = _nested_spelling(list(sys.argv[1:] if argv is None else argv))
  try:
    fv = cli.parse(lambda fv: define_flags(fv, argv), argv, doc=__doc__)
    fv.config.to_dict()       # a config file that failed to load raises only when it is read
  except cli.UsageError as err:
    if "Error whilst parsing config file" not in str(err):
      raise
    last = re.findall(r"\w+Error: (?:(?!\w+Error: ).)*$", str(err))   # the file's own exception
    raise cli.UsageError(f"--config: {last[-1] if last else err}") from None
  except _CONFIG_FLAG_ERRORS as err:
    raise cli.UsageError(_config_error(err, argv)) from None
  return fv


def _config(fv: flags.FlagValues):
  """The typed run config: the config file's fields, the shortcut flags over them, and the run
  policy (``stgcn_jax.training.config``: sparsity 0 is a dense run, a warm-up longer than a short
  run is rescaled) applied once."""
  # pylint: disable-next=import-outside-toplevel
  from stgcn_jax.training.config import LEGACY_NAMES, RunConfig
  nested = fv.config.to_dict()
  explicit = set()
  for name in _SHORTCUTS:
    value = fv[name].value
    if value is not None:
      path = _FIELD.get(name) or LEGACY_NAMES[name]
      _set(nested, path, value)
      explicit.add(path)
  sp = nested["sparsity"]
  if "sparsity.level" in explicit:
    explicit |= _sparsity(sp, fv)
  if sp.get("variants") and sp.get("mode") != "variants":
    raise cli.UsageError(f"--variants lists the members of --mode=variants, not of mode "
                     f"{sp.get('mode')!r}")
  return RunConfig.from_config(nested, explicit=explicit)


def _set(nested: dict, path: str, value) -> None:
  *parts, field = path.split(".")
  for part in parts:
    nested = nested[part]
  nested[field] = value


def _sparsity(sp: dict, fv: flags.FlagValues) -> set[str]:
  """``--sparsity``: a number, or ``auto[:TOLERANCE]`` (joint variants over the candidate levels
  ``ensemble_sparsities``, keeping the sparsest within TOLERANCE points of the best by validation);
  sets the config's sparsity part ``sp``; returns the fields it set."""
  text = str(sp["level"]).strip()
  if text != "auto" and not text.startswith("auto:"):
    try:
      sp["level"] = float(text)
    except ValueError:
      raise cli.UsageError(f"--sparsity: expected a fraction in [0, 1) or auto[:TOLERANCE], got "
                       f"{text!r}") from None
    return set()
  tolerance = text.partition(":")[2] or "1"
  try:
    sp["auto_tolerance"] = float(tolerance)
  except ValueError:
    sp["auto_tolerance"] = -1.0
  if not sp["auto_tolerance"] >= 0:
    raise cli.UsageError(f"--sparsity={text}: the tolerance must be a number of points >= 0, got "
                     f"{tolerance!r}")
  for name in ("mode", "variants"):
    if fv[name].value is not None:
      raise cli.UsageError(f"--sparsity=auto trains its own variants (the levels of "
                       f"config.sparsity.ensemble_sparsities); drop --{name}")
  sp["mode"] = "variants"
  sp["variants"] = "s=" + ",".join(f"{float(s):g}" for s in sp["ensemble_sparsities"])
  sp["level"] = float(max(sp["ensemble_sparsities"]))
  return {"sparsity.mode", "sparsity.variants", "sparsity.auto_tolerance"}


def _run_name(config) -> str:
  parts = [config.data.dataset, config.model.backbone, config.sparsity.mode]
  if config.sparsity.auto_tolerance >= 0:
    parts[-1] = "auto"
  elif config.sparsity.mode == "variants":
    parts.append(re.sub(r"[^\w.,=-]+", "_", config.sparsity.variants).replace("=", ""))
  elif config.sparsity.mode != "dense":
    parts.append(f"s{config.sparsity.level:g}")
  if config.data.modality != "j":
    parts.append(config.data.modality.replace(",", "+"))
  return "_".join(parts)


def _whose(results: dict) -> str:
  if "auto_sparsity" in results:
    return f", of the chosen member {results['auto_sparsity']['chosen']}"
  return ", of the members' summed scores" if "members" in results else ""


def _print_members(results: dict) -> None:
  """Joint variants: one line per member, the error bars over seeds, the automatic choice."""
  pct = lambda v: "   -" if v is None else f"{100 * v:5.1f}"
  print(f"{'member':<28} {'val top-1':>9} {'test top-1':>10} {'sparsity':>8}")
  for m in results["members"]:
    print(f"{m['name']:<28} {pct(m.get('val_top1')):>9} {pct(m['top1']):>10} "
          f"{m['prunable_sparsity']:8.4f}")
  for g in results.get("seed_groups", []):
    val = (f"val {100 * g['val_top1_mean']:.1f} ± {100 * g['val_top1_std']:.1f}, "
           if "val_top1_mean" in g else "")
    print(f"s={g['sparsity']:g} mask={g['mask_method']} lambda={g['penalty_lambda']:g} over "
          f"{len(g['seeds'])} seeds: {val}test {100 * g['top1_mean']:.1f} ± "
          f"{100 * g['top1_std']:.1f} (mean ± std)")
  if "auto_sparsity" in results:
    print(f"auto sparsity: {results['auto_sparsity']['chosen']}: "
          f"{results['auto_sparsity']['reason']}")


def _join(distributed, fv: flags.FlagValues, config) -> None:
  """Joins the other processes of a multi-process run (before any JAX computation); on all
  but process 0 the run's messages are then not printed again."""
  launch = distributed.Launch.resolve(**{name: fv[name].value for name in _LAUNCH})
  distributed.initialize(launch, auto=config.loop.distributed)
  if not distributed.is_main():
    sys.stdout = open(os.devnull, "w")  # pylint: disable=consider-using-with


def main(argv=None) -> int:
  """The command (``argv`` without the program name; None: ``sys.argv[1:]``); its exit status: a
  user mistake (a flag, a config field, a dataset, a workdir) is one ``error:`` line and 2."""
  fv = _parse(argv)
  runtime.configure_xla()
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  from stgcn_jax import distributed  # pylint: disable=import-outside-toplevel
  from stgcn_jax.training import loop  # pylint: disable=import-outside-toplevel
  try:
    config = _config(fv)
    _join(distributed, fv, config)
    workdir = fv.workdir or os.path.join("runs", _run_name(config))
    print(f"workdir: {os.path.abspath(workdir)}")
    results = loop.train_and_evaluate(config, workdir)
  except cli.UserError as err:   # anything else is a bug: its traceback
    print(f"error: {err}", file=sys.stderr)
    return 2
  if "name" in (results.get("members") or [{}])[0]:
    _print_members(results)
  print(f"test top-1 {results['top1']:.4f}  top-5 {results['top5']:.4f}  mean class "
        f"{results['mean_class_accuracy']:.4f}  on {results['num_samples']} samples "
        f"({results['num_classes']} classes)" + _whose(results))
  if "prunable_sparsity" in results:
    print(f"realised sparsity: {results['prunable_sparsity']:.4f} of prunable weights, "
          f"{results['total_sparsity']:.4f} of all; {results['nonzero_params']:,} nonzero "
          "parameters")
  print(f"wrote {os.path.join(workdir, 'results.json')}")
  return 0


if __name__ == "__main__":
  runtime.reexec_with_tcmalloc("experiments.run", sys.argv[1:])  # see stgcn_jax.runtime
  sys.exit(cli.run(main))
