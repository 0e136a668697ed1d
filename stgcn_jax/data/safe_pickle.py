"""The project's one way to read a pickle: a restricted unpickler that cannot run code.

A pickle can name any importable callable and have it called while loading, so plain
``pickle.load`` on a file from the internet (an annotation pickle, CTR-GCN's ``val_label.pkl``) can
run arbitrary code. :func:`load` allows only builtins (dicts, lists, strings, numbers, tuples,
sets) and numpy arrays, dtypes and scalars; any other global in the file is refused before it is
imported, and every failure is one :class:`DataError` naming the file.
"""

from __future__ import annotations

import io
import os
import pickle

from stgcn_jax.data.records import DataError

__all__ = ["load", "loads", "ALLOWED_GLOBALS"]

ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"), ("_codecs", "encode"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "tuple"),
})
# What a corrupted or hostile pickle raises inside the unpickler (besides our own refusal).
_LOAD_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                ImportError, IndexError, KeyError, MemoryError, OverflowError, RecursionError,
                UnicodeDecodeError)


class _RestrictedUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    if (module, name) in ALLOWED_GLOBALS:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f"global {module}.{name} is not allowed (only builtins and numpy "
                                 "arrays are)")


def loads(data: bytes, where: str = "pickle"):
  """Unpickles ``data`` with the restrictions of :func:`load`; errors name ``where``."""
  try:
    return _RestrictedUnpickler(io.BytesIO(data)).load()
  except _LOAD_ERRORS as err:
    raise DataError(f"{where}: cannot unpickle ({type(err).__name__}: {err}); the file is "
                    "truncated, corrupted or holds objects other than builtins and numpy "
                    "arrays") from None


def load(path: str, what: str = "pickle file"):
  """The object in the pickle at ``path``, read without running any code from it.

  Raises:
    DataError: ``path`` is missing, not a regular file, unreadable, truncated, corrupted, or names
      a global other than the allowed builtins / numpy ones.
  """
  if not os.path.exists(path):
    raise DataError(f"{what} {path!r} does not exist")
  if not os.path.isfile(path):
    raise DataError(f"{what} {path!r} is not a regular file")
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as err:
    raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
  return loads(data, path)
