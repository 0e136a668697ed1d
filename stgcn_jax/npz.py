"""Reading an ``.npz`` file that may be truncated, corrupted or hostile: :func:`read_npz`.

``numpy.load`` trusts the file: a truncated zip raises ``zipfile.BadZipFile``, a damaged member a
CRC or ``zlib`` error only when it is read, and a member header that claims a huge shape has the
array allocated before a byte is read. :func:`read_npz` reads the members of a zip of ``.npy``
arrays after checking each: the header parses; the dtype is a plain number or bool (an object array
is refused: nothing is ever unpickled); the shape's byte count equals the bytes the member holds;
the members together stay under ``max_bytes``. Every failure is one ``error`` naming the file and
the member.
"""

from __future__ import annotations

import math
import zipfile
import zlib

import numpy as np

from stgcn_jax.errors import UserError

__all__ = ["MAX_BYTES", "NpzError", "read_npz"]

MAX_BYTES = 1 << 30             # 268M float32 values; the largest skeleton models hold ~4M
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")      # a zip's first entry, or an empty zip
# What the zip and zlib modules raise on a truncated or corrupted archive or member.
_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
           RuntimeError)


class NpzError(UserError):
  """An ``.npz`` that cannot be read safely (the default error of :func:`read_npz`)."""


_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
            (3, 0): np.lib.format.read_array_header_2_0}


def _member(z: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, error) -> np.ndarray:
  """One checked ``.npy`` member of ``z``."""
  with z.open(info) as m:
    version = np.lib.format.read_magic(m)
    if version not in _HEADERS:
      raise error(f"{where}: unknown .npy format version {version}")
    shape, fortran, dtype = _HEADERS[version](m)
    if dtype.hasobject or dtype.kind not in "biufc" or dtype.subdtype is not None:
      raise error(f"{where}: dtype {dtype} is not a plain numeric dtype (object / pickled arrays "
                  "are never read)")
    if any(not isinstance(s, int) or s < 0 for s in shape):
      raise error(f"{where}: invalid shape {shape}")
    nbytes = math.prod(shape) * dtype.itemsize
    held = info.file_size - m.tell()
    if nbytes != held:
      raise error(f"{where}: the header says shape {shape} of {dtype} ({nbytes:,} bytes), the "
                  f"member holds {held:,} bytes")
    data = m.read(nbytes)
    rest = m.read()                 # reads to the end: the zip module checks the CRC there
  if len(data) != nbytes or rest:
    raise error(f"{where}: truncated ({len(data):,} of {nbytes:,} bytes)")
  array = np.frombuffer(data, dtype)
  return array.reshape(shape, order="F" if fortran else "C").copy()


def read_npz(path: str, error=NpzError, max_bytes: int = MAX_BYTES) -> dict[str, np.ndarray]:
  """``{name: array}`` of the ``.npz`` at ``path`` (names without ``.npy``), every member checked
  as the module docstring says; ``error`` (an exception class) names the file and member."""
  try:
    with open(path, "rb") as f:
      magic = f.read(4)
  except OSError as err:
    raise error(f"{path}: cannot read it ({err.strerror or err})") from None
  if magic not in _ZIP_MAGIC:
    raise error(f"{path}: not an .npz file (no zip header: truncated, overwritten or another "
                "format)")
  where = path
  try:
    with zipfile.ZipFile(path) as z:
      infos = z.infolist()
      total = sum(i.file_size for i in infos)
      if total > max_bytes:
        raise error(f"{path}: its arrays would take {total:,} bytes, more than the "
                    f"{max_bytes:,} allowed")
      out = {}
      for info in infos:
        where = f"{path}: member {info.filename!r}"
        if not info.filename.endswith(".npy") or info.filename[:-4] in out:
          raise error(f"{where}: expected uniquely named .npy arrays")
        out[info.filename[:-4]] = _member(z, info, where, error)
      return out
  except error:
    raise
  except _DAMAGE as err:
    raise error(f"{where}: truncated or corrupted ({type(err).__name__}: "
                f"{str(err)[:200]})") from None
