"""Small shared helpers: atomic file writes, the JSONL metric writer, time formatting."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import logging as py_logging

import jax
import numpy as np
from absl import logging


def is_main_process() -> bool:
  """True on the process that writes reports and metrics (process 0)."""
  return jax.process_index() == 0


def to_jsonable(value: Any) -> Any:
  """Converts numpy scalars/arrays and tuples inside `value` to plain JSON types."""
  if isinstance(value, dict):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return to_jsonable(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not np.isfinite(value):
    return None  # JSON has no NaN/inf; `None` reads back as "undefined".
  return value


def write_text(path: str, text: str) -> None:
  """Writes a file atomically (temp file + rename): readers never see half a file."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, value: Any) -> None:
  """Writes `value` as indented JSON, atomically."""
  write_text(path, json.dumps(to_jsonable(value), indent=2, sort_keys=False) + "\n")


def read_json(path: str) -> Any:
  """Reads a JSON file."""
  with open(path) as f:
    return json.load(f)


class MetricWriter:
  """Appends one JSON object per line to WORKDIR/metrics.jsonl (process 0 only)."""

  def __init__(self, path: str | None):
    self.path = path if is_main_process() else None
    if self.path:
      os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)

  def write(self, **record: Any) -> None:
    if not self.path:
      return
    record = {"time": round(time.time(), 3), **to_jsonable(record)}
    line = (json.dumps(record) + "\n").encode()
    # One O_APPEND write per record: a process killed mid-run never leaves half a line behind
    # another record.
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      os.write(fd, line)
    finally:
      os.close(fd)


def format_seconds(seconds: float) -> str:
  """1h02m, 3m05s or 12s."""
  seconds = max(int(round(seconds)), 0)
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  if minutes:
    return f"{minutes}m{secs:02d}s"
  return f"{secs}s"


class _DropLibraryInfo(py_logging.Filter):
  """Drops INFO/DEBUG records logged from inside noisy libraries (orbax logs every save step)."""

  NOISY = ("/orbax/", "/tensorflow_datasets/", "/etils/")

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno >= py_logging.WARNING:
      return True
    return not any(part in record.pathname for part in self.NOISY)


def quiet_library_logs() -> None:
  """Keeps progress lines readable: library INFO chatter is dropped, warnings kept."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _DropLibraryInfo) for f in handler.filters):
    handler.addFilter(_DropLibraryInfo())
