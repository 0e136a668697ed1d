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

This module imports nothing of the library, so any module may import it.
"""

__all__ = ["UserError"]


class UserError(ValueError):
  """The user's input (flags, config, files, data, arguments) is wrong; the message names where
  and what was expected. A program prints it as one ``error:`` line with exit status 2."""
