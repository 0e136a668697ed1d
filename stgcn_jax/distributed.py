"""Several processes (hosts) on JAX's multi-process runtime: joining it, agreeing, leaving.

Every process runs the same command with its own id; process 0 hosts the coordinator::

  python -m experiments.run --coordinator_address=HOST0:PORT --num_processes=N --process_id=I ...

(or ``$STGCN_JAX_COORDINATOR``, ``$STGCN_JAX_NUM_PROCESSES``, ``$STGCN_JAX_PROCESS_ID``). With
``--config.loop.distributed=True`` and no address, JAX reads them from the cluster (SLURM, Open MPI,
Kubernetes, Cloud TPU). :func:`initialize` must run before any JAX computation.

Everything that holds arrays is entered by every process: the train step, the evaluation's
gathers, every orbax save and restore. Files that are not orbax's (``config.json``,
``metrics.jsonl``, ``results.json``, ``scores.npz``, the model's ``model.json`` and its renames) are
written by process 0 (:func:`is_main`), followed by a :func:`barrier` where the others go on to
read them. The workdir must be one folder that every process sees (:func:`check_shared_dir`).

A process that stops (killed, or failed) ends the others within about ``peer_timeout`` seconds: a
collective with it fails at once and is reported as one line (:func:`guard`); a process that waits
for it elsewhere, or for peers that do not start within ``init_timeout``, is ended by JAX's runtime
with its own message ("Terminating process because the JAX distributed service detected fatal
errors"). A failed process leaves at once (``os._exit``) instead of waiting, in JAX's exit
handler, for peers that will not come.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import sys
import uuid

import jax
from jax.experimental import multihost_utils
import numpy as np

from stgcn_jax.errors import UserError

__all__ = ["DistributedError", "Launch", "initialize", "is_main", "barrier", "all_agree",
           "replicate", "guard", "check_shared_dir"]

ENV = {"coordinator_address": "STGCN_JAX_COORDINATOR", "num_processes": "STGCN_JAX_NUM_PROCESSES",
       "process_id": "STGCN_JAX_PROCESS_ID", "init_timeout": "STGCN_JAX_INIT_TIMEOUT",
       "peer_timeout": "STGCN_JAX_PEER_TIMEOUT"}
# Errors that mean another process is gone (a collective or the coordination service lost it).
_LOST_PEER = ("gloo", "nccl", "connection reset", "connection closed", "connection refused",
              "heartbeat", "unavailable", "deadline_exceeded", "barrier", "socket closed")


class DistributedError(UserError):
  """A launch mistake (a missing or inconsistent setting), or a process that lost the others."""


@dataclasses.dataclass(frozen=True)
class Launch:
  """How this process joins: the coordinator ``HOST:PORT`` (process 0's host), the number of
  processes and this one's id; how long to wait for the others to start (``init_timeout``) and
  for a peer that stopped answering (``peer_timeout``: heartbeats, the exit), in seconds."""
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  init_timeout: int = 300
  peer_timeout: int = 60

  @classmethod
  def resolve(cls, **given) -> "Launch":
    """The settings given (flags; None = not given) over the environment (:data:`ENV`),
    checked: one DistributedError line for a mistake."""
    values = {}
    for field in dataclasses.fields(cls):
      value, source = given.get(field.name), f"--{field.name}"
      if value is None and os.environ.get(ENV[field.name], "").strip():
        value, source = os.environ[ENV[field.name]].strip(), f"${ENV[field.name]}"
      if value is not None and field.name != "coordinator_address":
        try:
          value = int(value)
        except ValueError:
          raise DistributedError(f"{source}={value!r} is not an integer") from None
        if value < (0 if field.name == "process_id" else 1):
          raise DistributedError(f"{source}={value} must be "
                                 f"{'>= 0' if field.name == 'process_id' else '>= 1'}")
      if value is not None:
        values[field.name] = value
    launch = cls(**values)
    launch.check()
    return launch

  def check(self) -> None:
    address, n, i = self.coordinator_address, self.num_processes, self.process_id
    if address is not None and (":" not in address or not address.rsplit(":", 1)[1].isdigit()):
      raise DistributedError(f"--coordinator_address={address!r}: expected HOST:PORT of process "
                             "0's host, e.g. 10.0.0.1:1234")
    if n is not None and i is not None and i >= n:
      raise DistributedError(f"--process_id={i} is not below --num_processes={n}; the ids are "
                             f"0 .. {n - 1}")
    if (n is not None or i is not None) and address is None:
      raise DistributedError("--num_processes / --process_id need --coordinator_address=HOST:PORT "
                             "(process 0's host and a free port)")

  @property
  def explicit(self) -> bool:
    return self.coordinator_address is not None


class _State:
  failed_code: int | None = None   # set when a multi-process run fails: leave without waiting


def initialize(launch: Launch | None = None, *, auto: bool = False) -> None:
  """Joins the multi-process runtime, once: with ``launch``'s settings when it names a
  coordinator (default: from the environment), else, with ``auto``, from the cluster JAX detects.
  Does nothing when neither applies or the runtime is up. Call before any JAX computation."""
  if jax.distributed.is_initialized():
    return
  launch = launch if launch is not None else Launch.resolve()
  if not (launch.explicit or auto):
    return
  timeouts = dict(initialization_timeout=launch.init_timeout,
                  heartbeat_timeout_seconds=launch.peer_timeout,
                  shutdown_timeout_seconds=launch.peer_timeout)
  where = (f"process {launch.process_id} of {launch.num_processes} at "
           f"{launch.coordinator_address}" if launch.explicit else "the cluster's processes")
  try:
    jax.distributed.initialize(launch.coordinator_address, launch.num_processes,
                               launch.process_id, **timeouts)
  except ValueError as err:   # nothing to auto-detect from
    raise DistributedError(
        f"cannot start several processes ({err}): outside SLURM, Open MPI, Kubernetes and Cloud "
        "TPU pass --coordinator_address=HOST:PORT, --num_processes and --process_id") from None
  except Exception as err:  # pylint: disable=broad-except  (the runtime raises XlaRuntimeError)
    if "must be called before" in str(err):
      raise   # a program error: JAX was used first
    raise DistributedError(f"could not join {where} ({_first_line(err)}); start every process "
                           "with the same --coordinator_address and --num_processes") from None
  if jax.process_count() > 1:
    atexit.register(_leave_at_once)  # runs before JAX's own exit handler, registered earlier


def is_main() -> bool:
  """Whether this is process 0, the one that writes the workdir's plain files and prints."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier ``name`` (nothing on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def all_agree(flag: bool) -> bool:
  """Whether ``flag`` is true on every process."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.all(multihost_utils.process_allgather(np.array([bool(flag)]), tiled=True)))


def replicate(tree, sharding):
  """``tree`` (the same values on every process) as arrays replicated over ``sharding``, a
  sharding that may span processes. ``jax.device_put`` cannot place a typed PRNG key on one that
  does: a key is placed as its raw data and wrapped again where it lands."""
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def one(x):
    if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
      wrap = lambda data, impl=jax.random.key_impl(x): jax.random.wrap_key_data(data, impl=impl)
      return jax.jit(wrap, out_shardings=sharding)(one(jax.random.key_data(x)))
    return jax.device_put(np.asarray(x), sharding)
  return jax.tree.map(one, tree)


@contextlib.contextmanager
def guard():
  """Around a multi-process run: an error that means another process stopped becomes one
  DistributedError line, and a process that fails leaves at exit at once (``os._exit``, code 2
  for a ``UserError`` as ``experiments.run`` uses, else 1) instead of waiting for the others."""
  try:
    yield
  except BaseException as err:
    if jax.process_count() == 1:
      raise
    _State.failed_code = (2 if isinstance(err, UserError)
                          else 130 if isinstance(err, KeyboardInterrupt) else 1)
    if isinstance(err, Exception) and not isinstance(err, DistributedError) and _lost_peer(err):
      _State.failed_code = 2
      raise DistributedError(
          f"process {jax.process_index()} of {jax.process_count()} lost another process "
          f"({_first_line(err)}); see the other processes' output for why. Start every process "
          "again with the same command: the run resumes from the workdir") from None
    raise


def check_shared_dir(path: str) -> None:
  """Refuses, in one line, a workdir that the processes do not all see (a local folder on each
  host): process 0 writes a token there that every process must read back."""
  if jax.process_count() == 1:
    return
  marker = os.path.join(path, ".process0_token")
  token = np.frombuffer(uuid.uuid4().bytes, np.uint8)
  if is_main():
    with open(marker, "wb") as f:
      f.write(token.tobytes())
  token = np.asarray(multihost_utils.broadcast_one_to_all(token))   # also a barrier
  try:
    with open(marker, "rb") as f:
      seen = f.read() == token.tobytes()
  except OSError:
    seen = False
  agreed = all_agree(seen)
  if is_main():
    os.remove(marker)
  if not agreed:
    raise DistributedError(f"--workdir {path} is not the same folder on every process (process "
                           f"{jax.process_index()} {'sees' if seen else 'does not see'} process "
                           "0's files there); use a filesystem that every host mounts")


def _lost_peer(err: BaseException) -> bool:
  text = f"{type(err).__name__} {err}".lower()
  return any(marker in text for marker in _LOST_PEER)


def _first_line(err: BaseException) -> str:
  line = next((l.strip() for l in str(err).splitlines() if l.strip()), type(err).__name__)
  return line if len(line) < 240 else line[:240] + " ..."


def _leave_at_once() -> None:
  if _State.failed_code is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_State.failed_code)  # pylint: disable=protected-access
