"""The one command-line style (stgcn_jax.cli): absl flags on a private FlagValues per program."""

import subprocess
import sys

import pytest
from absl import flags

from data_prep import common, ntu, pyskl, synthetic
from experiments import (bench, bench_graph, bf16_step, by_view, convert, data_bench, export,
                         predict)
from stgcn_jax import cli

from conftest import REPO


def _pyskl_flags(argv):
  return common.parse_flags(pyskl.define_flags, argv, None, name_default=None)


def test_dashed_and_underscored_names_are_one_flag():
  base = ["--src", "a.pkl", "--name", "x", "--layout", "coco"]
  dashed = _pyskl_flags(base + ["--label-base", "1", "--num-classes", "-3", "--class-names=f"])
  under = _pyskl_flags(base + ["--label_base=1", "--num_classes=-3", "--class_names", "f"])
  for fv in (dashed, under):
    assert (fv.label_base, fv.num_classes, fv.class_names, fv.overwrite) == ("1", -3, "f", False)
  assert _pyskl_flags(base + ["--overwrite"]).overwrite
  assert not _pyskl_flags(base + ["--overwrite", "--no-overwrite"]).overwrite


def test_defaults_and_repeated_src():
  fv = common.parse_flags(ntu.define_flags, ["--src", "a", "--src=b"], None, name_default="")
  assert (fv.src, fv.dataset, fv.benchmark, fv.name, fv.out) == (["a", "b"], "ntu60", None, "",
                                                                  None)
  fv = common.parse_flags(synthetic.define_flags, [], None, name_default="synthetic")
  assert (fv.name, fv.dims, fv.num_train, fv.two_person_prob) == ("synthetic", 3, 600, 0.2)
  args = bench.parse_args(["--tiny", "--no-pipeline", "--deploy_sparsities=0,0.5"])
  assert (args.pipeline, args.frames, args.deploy_sparsities) == (False, 16, [0.0, 0.5])


@pytest.mark.parametrize("argv,message", [
    (["--src", "a.pkl", "--layout", "coco"], "--name is required"),
    (["--src", "a.pkl", "--name", "x", "--layout", "coco", "--label-base", "2"], "label_base"),
    (["--src", "a.pkl", "--name", "x", "--layout", "coco", "--bogus"], "'bogus'"),
    (["--src", "a.pkl", "--name", "x", "--layout", "coco", "stray"], "unexpected arguments"),
])
def test_user_mistake_is_one_error_line_and_status_2(capsys, argv, message):
  assert common.run_cli(pyskl.main, argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_programs_share_a_process_without_flag_clashes():
  for program in (pyskl, ntu, synthetic, convert, data_bench, bench, bench_graph, bf16_step,
                  by_view, predict, export):
    fv = flags.FlagValues()
    program.define_flags(fv)
    assert "help" not in fv and not set(fv) & set(flags.FLAGS), program.__name__


def test_help_exits_0_and_lists_the_flags(capsys):
  with pytest.raises(SystemExit) as exit_info:
    pyskl.main(["--help"])
  assert exit_info.value.code == 0
  out = " ".join(capsys.readouterr().out.split())    # absl wraps to the terminal's width
  assert "--label_base" in out and "also --label-base" in out and "--[no]overwrite" in out


def test_command_line_usage_error_is_one_line():
  result = subprocess.run([sys.executable, "-m", "data_prep.synthetic", "--dims", "4"], cwd=REPO,
                          capture_output=True, text=True, check=False, timeout=120)
  assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
  assert result.stderr.startswith("error: flag --dims=4")


def test_normalize_leaves_values_alone():
  fv = flags.FlagValues()
  flags.DEFINE_string("class_names", None, "", flag_values=fv)
  flags.DEFINE_bool("dry_run", False, "", flag_values=fv)
  assert cli.normalize_argv(fv, ["--class-names", "--not-a-flag", "--dry-run", "--no-dry-run",
                                 "--unknown-x", "--", "--class-names"]) == [
      "--class_names", "--not-a-flag", "--dry_run", "--nodry_run", "--unknown_x", "--",
      "--class-names"]
