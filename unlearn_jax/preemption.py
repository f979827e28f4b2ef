"""SIGTERM handling: a preempted study saves a checkpoint at the current step and exits.

TPU and cloud VMs announce preemption with SIGTERM. `install()` makes the signal set a flag
instead of killing the process; the training loop polls `requested()` after every step, saves,
and raises `Preempted`, which the binary turns into a clean exit (status 143 = 128 + SIGTERM).
Rerunning the same command resumes from that checkpoint.
"""

from __future__ import annotations

import signal
import threading

EXIT_CODE = 128 + signal.SIGTERM
_requested = threading.Event()


class Preempted(BaseException):
  """Raised after the checkpoint of a preempted run has been written.

  A BaseException (like KeyboardInterrupt) so that code isolating method failures with
  `except Exception` lets it through.
  """


def _handle(signum, frame):  # pylint: disable=unused-argument
  _requested.set()


def install() -> None:
  """Routes SIGTERM to the flag (main thread only; elsewhere this is a no-op)."""
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _handle)


def requested() -> bool:
  """True once SIGTERM has arrived."""
  return _requested.is_set()


def clear() -> None:
  """Forgets a received SIGTERM (for tests and for library users who handle it themselves)."""
  _requested.clear()
