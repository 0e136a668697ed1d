"""``training.preemption.StopRequest`` in-process: SIGTERM sets the request and nothing else; the
previous handler is back afterwards. (A whole run stopped by SIGTERM and resumed bit for bit:
``test_train.py::test_resume_after_sigterm_and_kill_is_bit_identical``.)"""

import os
import signal

from stgcn_jax.training.preemption import StopRequest


def test_sigterm_is_a_request_and_the_old_handler_comes_back():
  seen = []
  previous = signal.signal(signal.SIGTERM, lambda *_: seen.append("old"))
  try:
    with StopRequest() as stop:
      assert not stop.requested(0)
      os.kill(os.getpid(), signal.SIGTERM)
      assert stop.requested(1) and not seen
    os.kill(os.getpid(), signal.SIGTERM)
    assert seen == ["old"]
  finally:
    signal.signal(signal.SIGTERM, previous)
