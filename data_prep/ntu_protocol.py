"""NTU RGB+D benchmark protocols and the lists shipped with the converter.

Sample names (``SsssCcccPpppRrrrAaaa``) are parsed by ``stgcn_jax.data.formats.ntu``. The protocols (NTU
README): NTU-60 xsub trains on :data:`XSUB60`, xview on cameras 2 and 3; NTU-120 xsub trains on
:data:`XSUB120`, xset on even setups. See :mod:`data_prep.ntu` for the converter.
"""

from __future__ import annotations

import os

from stgcn_jax.data import DataError
from stgcn_jax.data.formats.ntu import NAME_RE, stem

MAX_LIST_BYTES = 256 * 2**20               # the official missing-skeleton list is a few KB
_HERE = os.path.dirname(os.path.abspath(__file__))
MISSING_FILE = os.path.join(_HERE, "ntu_missing_skeletons.txt")
CLASS_FILE = os.path.join(_HERE, "ntu_class_names.txt")
XSUB60 = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
XSUB120 = XSUB60 + (45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83,
                    84, 85, 86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103)
DATASETS = {"ntu60": {"max_setup": 17, "num_classes": 60, "benchmarks": ("xsub", "xview")},
            "ntu120": {"max_setup": 32, "num_classes": 120, "benchmarks": ("xsub", "xset")}}


def is_train(meta: dict, dataset: str, benchmark: str) -> bool:
  if benchmark == "xsub":
    return meta["performer"] in (XSUB60 if dataset == "ntu60" else XSUB120)
  if benchmark == "xview":
    return meta["camera"] in (2, 3)
  if benchmark == "xset":
    return meta["setup"] % 2 == 0
  raise DataError(f"unknown benchmark {benchmark!r}")


def class_names(dataset: str) -> list[str]:
  """The class names of ``dataset`` (``ntu60`` or ``ntu120``) from the shipped list."""
  with open(CLASS_FILE, encoding="utf-8") as f:
    names = [line.strip() for line in f if line.strip() and not line.startswith("#")]
  return names[:DATASETS[dataset]["num_classes"]]


def read_missing_list(path: str) -> set[str]:
  """The sample names of a missing-skeleton list: UTF-8 text, one name per line, ``#`` comments.

  A name may carry the ``.skeleton`` suffix; names are upper-cased. Raises one DataError naming the
  file (and line) when it is unreadable, not UTF-8 text or holds a line that is not a sample name.
  """
  expected = "UTF-8 text with one NTU sample name SsssCcccPpppRrrrAaaa per line"
  try:
    with open(path, "rb") as f:
      raw = f.read(MAX_LIST_BYTES + 1)
  except OSError as err:
    raise DataError(f"missing-skeleton list {path!r}: cannot read it ({err.strerror or err})") \
        from None
  if len(raw) > MAX_LIST_BYTES:
    raise DataError(f"missing-skeleton list {path!r} is larger than {MAX_LIST_BYTES} bytes; "
                    f"expected {expected}")
  try:
    text = raw.decode("utf-8").removeprefix("\ufeff")
  except UnicodeDecodeError as err:
    raise DataError(f"missing-skeleton list {path!r} is not UTF-8 text (byte {err.start} is "
                    f"{raw[err.start:err.start + 1]!r}); expected {expected}") from None
  names = set()
  for number, line in enumerate(text.split("\n"), 1):
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    name = stem(line)
    if not NAME_RE.match(name):
      raise DataError(f"missing-skeleton list {path}:{number}: {line[:60]!r} is not a sample name; "
                      f"expected {expected}")
    names.add(name.upper())
  return names
