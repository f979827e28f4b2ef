"""Small shared helpers: atomic file writes, the metric writer (JSONL and TensorBoard events),
time formatting."""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import socket
import struct
import time
from typing import Any, Callable

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
  """Appends one JSON object per line to WORKDIR/metrics.jsonl, and each record's numbers as
  TensorBoard scalars to WORKDIR/tensorboard/<run>/ (process 0 only; docs/design.md §6.1).

  A record is `run` (the model's name, e.g. 'original/seed_0'), `step` and its values; the
  event files of run `r` (`tensorboard_run_dir`) get one event per record at that step and the
  record's `time`, a scalar per number (nested dicts and lists flattened: 'acc/test',
  'member_loss/3'). Non-finite values are null in the JSONL and absent from the events; a record
  without `run` or an integer `step` goes to the JSONL only.

  Both files are written synchronously, one O_APPEND write per record, with nothing buffered or
  held open: a finished study leaves complete files, a killed one readable ones.
  """

  def __init__(self, path: str | None, tensorboard_dir: str | None = "",
               rename: Callable[[str], str] | None = None):
    """`path`: the JSONL file (None: write nothing). `tensorboard_dir`: where the runs' event
    directories go ('' : `tensorboard/` beside `path`; None: no events). `rename` maps each
    record's `run` before it is written (both files)."""
    main = is_main_process()
    self.path = path if main else None
    if tensorboard_dir == "" and path:
      tensorboard_dir = os.path.join(os.path.dirname(path), TENSORBOARD_DIR)
    self.events = EventWriter(tensorboard_dir) if main and tensorboard_dir else None
    self.rename = rename
    if self.path:
      os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)

  @property
  def active(self) -> bool:
    """Whether records go anywhere (False on processes other than 0)."""
    return bool(self.path) or self.events is not None

  def renamed(self, rename: Callable[[str], str]) -> "MetricWriter":
    """A writer to the same files that writes run `rename(run)` for each record's `run`."""
    inner = self.rename
    view = copy.copy(self)
    view.rename = rename if inner is None else lambda run: inner(rename(run))
    return view

  def write(self, **record: Any) -> None:
    if not self.active:
      return
    if self.rename is not None and isinstance(record.get("run"), str):
      record["run"] = self.rename(record["run"])
    record = {"time": round(time.time(), 3), **to_jsonable(record)}
    if self.path:
      line = (json.dumps(record) + "\n").encode()
      # One O_APPEND write per record: a process killed mid-run never leaves half a line behind
      # another record.
      _append(self.path, line)
    if self.events is not None:
      self.events.write(record)

  def close(self) -> None:
    """Nothing is buffered (every record is on disk when `write` returns); forgets the event
    files, so a later record starts a new one."""
    if self.events is not None:
      self.events.close()


def _append(path: str, data: bytes) -> None:
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    os.write(fd, data)
  finally:
    os.close(fd)


# ----------------------------------------------------------------------------------------------
# TensorBoard event files, without TensorFlow: the protos and CRC of tensorboardX.

TENSORBOARD_DIR = "tensorboard"
# Record fields that are not scalars of the run.
_NOT_SCALARS = ("time", "run", "step")


def tensorboard_run_dir(run: str) -> str:
  """The directory (relative to WORKDIR/tensorboard) of run `run`: its '/'-separated parts with
  every character other than letters, digits, '.', '_', '=' and '-' replaced by '_'
  ('lira (4 models)' -> 'lira_4_models'); '.' and '..' parts dropped."""
  parts = []
  for part in str(run).split("/"):
    part = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9._=-]", "_", part)).strip("_")
    if part and part not in (".", ".."):
      parts.append(part)
  return os.path.join(*parts) if parts else "_"


def scalars(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
  """The finite numbers of `record` (a JSON-like record) by tag: nested dicts and lists
  flattened with '/', booleans, strings, nulls and `time`, `run`, `step` left out."""
  out = {}
  items = record.items() if isinstance(record, dict) else enumerate(record)
  for key, value in items:
    if not prefix and key in _NOT_SCALARS:
      continue
    tag = f"{prefix}{key}"
    if isinstance(value, (dict, list, tuple)):
      out.update(scalars(value, tag + "/"))
    elif isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_)):
      if np.isfinite(value):
        out[tag] = float(value)
  return out


def _masked_crc(data: bytes) -> int:
  from tensorboardX.crc32c import crc32c  # pylint: disable=g-import-not-at-top
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _tf_record(data: bytes) -> bytes:
  """`data` framed as a TFRecord (what event files are made of)."""
  header = struct.pack("<Q", len(data))
  return (header + struct.pack("<I", _masked_crc(header)) + data
          + struct.pack("<I", _masked_crc(data)))


class EventWriter:
  """TensorBoard event files, one directory per run under `root` (`tensorboard_run_dir`).

  Each process appends to its own file per run (events.out.tfevents.<time>.<host>.<pid>),
  created on the run's first record; a study resumed later adds a file beside it, and
  TensorBoard reads the run's files in order (dropping the points a resumed run logs again).
  """

  def __init__(self, root: str):
    self.root = root
    self._files: dict[str, str] = {}

  def write(self, record: dict[str, Any]) -> None:
    """Writes one event: the scalars of `record` at its `step` and `time`."""
    run, step = record.get("run"), record.get("step")
    values = scalars(record)
    if not isinstance(run, str) or isinstance(step, bool) or not isinstance(step, int) or (
        not values):
      return
    # pylint: disable-next=g-import-not-at-top
    from tensorboardX.proto import event_pb2, summary_pb2
    event = event_pb2.Event(
        wall_time=float(record.get("time", time.time())), step=step,
        summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)
                                           for tag, value in values.items()]))
    _append(self._file(run), _tf_record(event.SerializeToString()))

  def close(self) -> None:
    self._files.clear()

  def _file(self, run: str) -> str:
    path = self._files.get(run)
    if path is not None and os.path.exists(path):
      return path
    from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
    directory = os.path.join(self.root, tensorboard_run_dir(run))
    os.makedirs(directory, exist_ok=True)
    now = time.time()
    base = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}"
    for k in itertools.count():
      path = os.path.join(directory, base + (f".{k}" if k else ""))
      try:  # never two writers on one file (another process, or this one's earlier file)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        break
      except FileExistsError:
        continue
    try:
      os.write(fd, _tf_record(event_pb2.Event(wall_time=now,
                                              file_version="brain.Event:2").SerializeToString()))
    finally:
      os.close(fd)
    self._files[run] = path
    return path


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
