"""Stopping a run cleanly on SIGTERM: what a scheduler sends before it preempts a job or ends its
time (SLURM, Kubernetes, a cloud VM going away), and what ``kill`` sends by default.

:class:`StopRequest` is polled once a step by the training loop. On one process it is a Python
handler for SIGTERM that only sets a flag; with several processes JAX's own preemption notifier
owns SIGTERM (``jax.distributed.initialize`` installs it), and every process asks
``multihost_utils.reached_preemption_sync_point(step)``, which answers True on all of them at the
same step, so they save the same checkpoint. The loop then saves the train state at that step
(the data iterator's position with it, so the resumed run continues with the next batch, on CPU bit
for bit as if nothing had happened) and raises :class:`stgcn_jax.errors.Stopped`: the program prints
one line and exits with status 143 (128 + SIGTERM), the status a killed process has, so a
scheduler that requeues killed jobs requeues this one too. The same command resumes it.
"""

from __future__ import annotations

import signal
import threading

import jax


class StopRequest:
  """Whether the run was asked to stop (SIGTERM); use as a context manager around the loop."""

  def __init__(self):
    self._signal = None
    self._installed = False
    self._previous = signal.SIG_DFL

  def __enter__(self) -> "StopRequest":
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._note)
      self._installed = True
    return self

  def __exit__(self, *exc) -> None:
    if self._installed:   # None: a handler not set from Python, which Python cannot put back
      signal.signal(signal.SIGTERM,
                    signal.SIG_DFL if self._previous is None else self._previous)
      self._installed = False

  def _note(self, signum, frame) -> None:
    del frame
    self._signal = signum

  def requested(self, step: int) -> bool:
    """True once SIGTERM has come (on every process at the same ``step``, with several)."""
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      return bool(multihost_utils.reached_preemption_sync_point(step))
    return self._signal is not None
