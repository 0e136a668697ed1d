"""The one exception type for a user's mistake: :class:`UserError`.

``UserError`` means the user's input is wrong: a command-line flag, a config field, a file (a
dataset record, a checkpoint, a layout, a results file) or an argument a user passes to a public
function from a notebook. Its message names the flag, file, record or field and says what was
expected, so one line is enough: the programs in ``experiments/`` and ``data_prep/`` catch
``UserError`` (through ``stgcn_jax.cli.run``) and print ``error: MESSAGE`` with exit status 2.

Anything else is a bug (an internal invariant that failed: a shape our own code produced, a state
that cannot happen) and raises ``ValueError``, ``AssertionError``, ``RuntimeError`` or whatever
failed; no program catches it, so it shows its traceback.

Every specific user-error class of the project (``checkpoint.CheckpointError``, ``data.DataError``,
``graph.LayoutError``, ``cli.UsageError``, ...) subclasses ``UserError``. ``UserError`` is a
``ValueError``, so code that catches ``ValueError`` still catches it.

A run that stops because it was asked to (SIGTERM, ``training.preemption``) raises
:class:`Stopped`, which is neither: the programs print its one line and exit with its ``status``.

This module imports nothing of the library, so any module may import it.
"""

__all__ = ["UserError", "Stopped"]


class UserError(ValueError):
  """The user's input (flags, config, files, data, arguments) is wrong; the message names where
  and what was expected. A program prints it as one ``error:`` line with exit status 2."""


class Stopped(Exception):
  """A run stopped on request (SIGTERM) after saving what it needs to resume; the message says
  where it stopped and how to go on. A program prints it and exits with ``status``."""

  def __init__(self, message: str, status: int = 143):
    super().__init__(message)
    self.status = status
