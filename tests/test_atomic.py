"""stgcn_jax.atomic: a file is replaced only when completely written."""

import os

import pytest

from stgcn_jax import atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "results.json"
  path.write_text("old")
  with pytest.raises(RuntimeError):
    with atomic.atomic_open(str(path)) as f:
      f.write("half of the new")
      raise RuntimeError("killed")
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]
  with atomic.atomic_open(str(path)) as f:
    f.write("new")
  assert path.read_text() == "new" and os.listdir(tmp_path) == ["results.json"]
  assert (path.stat().st_mode & 0o777) == (0o666 & ~_umask())


def test_atomic_path_keeps_the_suffix_for_writers_that_read_it(tmp_path):
  with atomic.atomic_path(str(tmp_path / "fig.png")) as tmp:
    assert tmp.endswith(".png") and os.path.dirname(tmp) == str(tmp_path)
    open(tmp, "wb").write(b"png")
  assert (tmp_path / "fig.png").read_bytes() == b"png"


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask
