"""The tfds builder that writes skeleton datasets as array_record files, without TensorFlow.

One generic builder class, specialised per dataset name at run time, writes
``<data_dir>/<name>/1.0.0/`` with ``dataset_info.json``, ``features.json``, ``metadata.json`` and one
array_record file set per split. The files are read back with ``tfds.builder_from_directory``
(``stgcn_jax.data.load``), so reading never needs this module's classes.

The builder lives here, in a package module at depth 2, because tfds looks for README/CITATIONS next
to a builder's module (see docs/STACK.md section 2).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
import types
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from stgcn_jax import graph
from stgcn_jax.data.records import ConversionReport, DataError, check_record

__all__ = ["VERSION", "CONTRACT", "write_dataset", "dataset_dir", "recover_swap"]

VERSION = "1.0.0"
CONTRACT = ("keypoint (M, T, V, C) float32: M persons (variable, <= num_persons), T raw frames "
            "(variable), V joints of `layout`, C channels named in `channels`; zero joints are "
            "missing. label: 0-based class index. total_frames: raw frame count of the source. "
            "img_shape: (height, width) in pixels for 2D pixel data, (0, 0) otherwise.")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class _SkeletonBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes pre-built records; specialised per dataset by :func:`_builder_class`."""
  VERSION = tfds.core.Version(VERSION)

  def __init__(self, *, spec: dict, split_records: Mapping[str, Callable[[], Iterable[dict]]],
               **kwargs):
    self._spec = spec
    self._split_records = split_records
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    spec = self._spec
    features = tfds.features.FeaturesDict({
        "keypoint": tfds.features.Tensor(shape=(None, None, spec["num_joints"], spec["channels"]),
                                         dtype=np.float32,
                                         encoding=tfds.features.Encoding.BYTES),
        "label": tfds.features.ClassLabel(names=spec["class_names"]),
        "frame_dir": tfds.features.Text(),
        "total_frames": tfds.features.Scalar(dtype=np.int32),
        "img_shape": tfds.features.Tensor(shape=(2,), dtype=np.int32),
    })
    return tfds.core.DatasetInfo(builder=self, description=spec["description"], features=features,
                                 supervised_keys=("keypoint", "label"),
                                 metadata=tfds.core.MetadataDict(spec["metadata"]))

  # tfds's own lines name the temporary folder and speak of downloading; say what happens here.
  def _log_download_bytes(self) -> None:
    print(f"converting into dataset {self.name!r} (splits: {', '.join(self._split_records)}) ...")

  def _log_download_done(self) -> None:
    pass

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in self._split_records}

  def _generate_examples(self, split: str):
    spec, seen = self._spec, set()
    for record in self._split_records[split]():
      where = f"split {split!r}, sample {record.get('frame_dir')!r}"
      record = check_record(record, num_joints=spec["num_joints"], channels=spec["channels"],
                            num_classes=len(spec["class_names"]), where=where)
      if record["frame_dir"] in seen:
        raise DataError(f"{where}: duplicate sample name within the split")
      seen.add(record["frame_dir"])
      yield record["frame_dir"], record
    if not seen:
      raise DataError(f"split {split!r} has no samples; every input sample was rejected or the "
                      "split is empty")
    report = spec.get("report")
    if report is not None:
      self.info.metadata["conversion"] = report.to_json()


def _builder_class(name: str) -> type:
  def body(ns):
    ns.update(name=name, __module__=__name__)
  return types.new_class(f"Skeleton_{name}", (_SkeletonBuilder,), {"skip_registration": True},
                         body)


def dataset_dir(name: str, data_dir: str) -> str:
  """Where dataset ``name`` is (or will be) stored under ``data_dir``."""
  return os.path.join(os.path.abspath(os.path.expanduser(data_dir)), name, VERSION)


def _builder_spec(name: str, root: str, target: str, split_records, *, layout, class_names,
                  channels, num_persons, source, default_splits, report, overwrite,
                  extra_metadata) -> dict:
  """``write_dataset``'s arguments checked, as the spec of the builder that writes them."""
  if not _NAME_RE.match(name):
    raise DataError(f"dataset name {name!r} must match [a-z][a-z0-9_]* (lower case, digits, _)")
  layout = graph.get_layout(layout)
  if not split_records:
    raise DataError(f"dataset {name!r}: no splits to write")
  _check_writable_root(root)
  recover_swap(target)   # a replacement a kill interrupted: finished before anything is decided
  if os.path.exists(target) and not overwrite:
    raise DataError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
  roles = dict(default_splits or {})
  for role, split in roles.items():
    if split not in split_records:
      raise DataError(f"default split {role!r} -> {split!r} is not one of {sorted(split_records)}")
  metadata = {
      "layout": layout.to_json(), "layout_name": layout.name, "num_joints": layout.num_joints,
      "channels": list(channels), "num_persons": int(num_persons),
      "class_names": list(class_names), "num_classes": len(class_names),
      "splits": sorted(split_records), "default_splits": roles, "source": source,
      "contract": CONTRACT, **dict(extra_metadata or {}),
  }
  return {"num_joints": layout.num_joints, "channels": len(channels),
          "class_names": list(class_names), "metadata": metadata, "report": report,
          "description": f"{name}: skeleton clips, layout {layout.name}. {source}".strip()}


def write_dataset(name: str, data_dir: str, split_records: Mapping[str, Callable[[], Iterable[dict]]],
                  *, layout: str | graph.Layout | dict, class_names: Sequence[str],
                  channels: Sequence[str], num_persons: int, source: str = "",
                  default_splits: Mapping[str, str] | None = None,
                  report: ConversionReport | None = None, overwrite: bool = False,
                  extra_metadata: Mapping | None = None) -> str:
  """Writes a skeleton dataset as array_record and returns its directory.

  Args:
    name: dataset name, ``[a-z][a-z0-9_]*`` (e.g. ``nw_ucla``, ``ntu60_xsub``).
    data_dir: root of the store.
    split_records: split name -> a function returning an iterable of records
      (see :mod:`stgcn_jax.data.records`). Called once, lazily, while the split is written.
    layout: layout name, JSON path, dict or :class:`stgcn_jax.graph.Layout`.
    class_names: one name per 0-based label.
    channels: channel names, e.g. ``["x", "y", "z"]`` or ``["x", "y", "score"]``.
    num_persons: the largest M of any record (FormatGCNInput pads or truncates to its own M).
    source: a line describing where the data came from.
    default_splits: role -> split name, e.g. ``{"train": "xsub_train", "test": "xsub_val"}``, so
      ``load(name, split="train")`` works for every dataset.
    report: the converter's report; its counts are stored in the metadata.
    overwrite: replace an existing dataset of the same name.
    extra_metadata: more JSON-able metadata (e.g. the benchmark protocol).
  """
  root = os.path.abspath(os.path.expanduser(data_dir))
  target = dataset_dir(name, data_dir)
  spec = _builder_spec(name, root, target, split_records, layout=layout, class_names=class_names,
                       channels=channels, num_persons=num_persons, source=source,
                       default_splits=default_splits, report=report, overwrite=overwrite,
                       extra_metadata=extra_metadata)
  # Written under a temporary name beside the target and swapped in only when complete, so a
  # conversion that fails (or is killed) leaves an existing dataset as it was.
  staging = tempfile.mkdtemp(prefix=f".{name}.incomplete-", dir=root)
  try:
    builder = _builder_class(name)(spec=spec, split_records=split_records, data_dir=staging,
                                   file_format="array_record")
    tfds.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="stgcn_tfds_dl_") as downloads:
      builder.download_and_prepare(download_dir=downloads)
    _swap_in(builder.data_dir, target)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return target


def _check_writable_root(root: str) -> None:
  """Creates the store root, or raises one DataError when it is a file or cannot be created."""
  probe = root
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise DataError(f"output folder {root!r}: {probe!r} is a file, expected a directory")
  try:
    os.makedirs(root, exist_ok=True)
  except OSError as err:
    raise DataError(f"output folder {root!r} cannot be created ({err.strerror or err})") from None


def _swap_names(target: str) -> tuple[str, str]:
  """Beside ``NAME/1.0.0``: the finished new dataset waiting to be swapped in, and the old one
  while it is being replaced."""
  parent = os.path.dirname(target)
  return (os.path.join(parent, f".{VERSION}.incoming"),
          os.path.join(parent, f".{VERSION}.replaced"))


def _swap_in(built: str, target: str) -> None:
  """Moves the finished dataset ``built`` to ``target``, replacing what is there last: ``built``
  is first renamed beside ``target`` (``.1.0.0.incoming``, complete), the old dataset aside
  (``.1.0.0.replaced``), the new one into place; a kill between the renames is finished by the
  next converter or reader (:func:`recover_swap`)."""
  os.makedirs(os.path.dirname(target), exist_ok=True)
  incoming, replaced = _swap_names(target)
  recover_swap(target)
  shutil.rmtree(incoming, ignore_errors=True)
  os.replace(built, incoming)
  if os.path.lexists(target):
    shutil.rmtree(replaced, ignore_errors=True)
    os.replace(target, replaced)
  os.replace(incoming, target)
  shutil.rmtree(replaced, ignore_errors=True)


def recover_swap(target: str, *, cleanup: bool = True) -> str | None:
  """Finishes or rolls back a replacement of the dataset at ``target`` that a kill interrupted;
  returns a note saying which (None when there was nothing to do).

  With ``target`` missing: the complete new dataset (``.1.0.0.incoming``) is renamed into place,
  else the old one (``.1.0.0.replaced``, or ``.1.0.0.replaced-*/data`` of earlier versions) is put
  back. With ``cleanup`` (a converter; not a reader, which may run beside one) the leftovers beside
  an intact ``target`` are removed. A rename that fails is one DataError saying what to rename.
  """
  incoming, replaced = _swap_names(target)
  parent = os.path.dirname(target)
  older = sorted(glob.glob(os.path.join(glob.escape(parent), f".{VERSION}.replaced-*")))
  note = None
  if not os.path.lexists(target):
    old = replaced if os.path.isdir(replaced) else next(
        (os.path.join(d, "data") for d in older if os.path.isdir(os.path.join(d, "data"))), None)
    source = (incoming if os.path.isfile(os.path.join(incoming, "dataset_info.json")) else old)
    if source is None:
      return None
    try:
      os.replace(source, target)
    except OSError as err:
      raise DataError(f"{target}: a replacement of the dataset was interrupted and cannot be "
                      f"completed ({err.strerror or err}); rename {source} to {target}") from None
    note = (f"{target}: finished a replacement of the dataset that was interrupted"
            if source == incoming else
            f"{target}: restored the previous dataset (its replacement was interrupted)")
    print(f"note: {note}")
  if cleanup:
    for leftover in (incoming, replaced, *older):
      shutil.rmtree(leftover, ignore_errors=True)
  return note
