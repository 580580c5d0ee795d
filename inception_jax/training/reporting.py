"""What a run tells its user: a progress line, `metrics.jsonl` and TensorBoard events.

Only process 0 reports. A resumed run replays the steps after its checkpoint, so records past the
checkpoint's step are dropped from `metrics.jsonl` and the TensorBoard events when it resumes (they
are written again, with the same values): both read as one uninterrupted run.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Any, TextIO

import tensorflow as tf

METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
  """The records of `<workdir>/metrics.jsonl`, in order."""
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_after(path: pathlib.Path, step: int) -> None:
  """Keeps the records up to `step`, replacing the file atomically (a crash keeps the old one)."""
  kept = [
    line
    for line in path.read_text().splitlines()
    if line.strip() and json.loads(line)["step"] <= step
  ]
  partial = path.with_suffix(".jsonl.partial")
  partial.write_text("".join(line + "\n" for line in kept))
  os.replace(partial, path)


def _drop_events_after(folder: pathlib.Path, step: int) -> None:
  """Rewrites each TensorBoard events file that holds steps past `step` without them, atomically
  like `_truncate_after`. TensorBoard's own purge on restart only hides replayed points in some of
  its loaders; here they are gone from the files, for every reader. A record cut short by a kill
  ends what can be read of its file."""
  for path in sorted(folder.glob("*tfevents*")):
    kept, dropped = [], False
    try:
      for record in tf.data.TFRecordDataset(str(path)):
        raw = record.numpy()
        if tf.compat.v1.Event.FromString(raw).step > step:
          dropped = True
        else:
          kept.append(raw)
    except tf.errors.DataLossError:  # the killed writer's last record, half written
      dropped = True
    if dropped:
      partial = folder.parent / "tensorboard.partial"  # no "tfevents" in it: never read as events
      with tf.io.TFRecordWriter(str(partial)) as writer:
        for raw in kept:
          writer.write(raw)
      os.replace(partial, path)


def format_duration(seconds: float) -> str:
  seconds = max(0, round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def progress_line(
  step: int, total_steps: int, metrics: dict[str, float], eta_seconds: float
) -> str:
  """'step  120/1000 | loss 0.4321 | top1 87.50% | lr 0.0800 | 1,234 img/s | ETA 1m23s'."""
  width = len(str(total_steps))
  return (
    f"step {step:>{width}}/{total_steps} | loss {metrics['loss']:.4f} | "
    f"top1 {100 * metrics['top1']:6.2f}% | lr {metrics['learning_rate']:.4g} | "
    f"{metrics['images_per_second']:,.0f} img/s | ETA {format_duration(eta_seconds)}"
  )


def eval_line(step: int | list[int], metrics: dict[str, float], crops: int = 1) -> str:
  """'eval at step 120: ...'; an ensemble's steps as a list: 'eval of 3 models (steps ...)'."""
  what = (
    f"eval at step {step}"
    if isinstance(step, int)
    else f"eval of {len(step)} models (steps {', '.join(map(str, step))})"
  )
  views = f", {crops} crops per image" if crops > 1 else ""
  return (
    f"{what}{views}: loss {metrics['loss']:.4f} | top1 {100 * metrics['top1']:.2f}% | "
    f"top5 {100 * metrics['top5']:.2f}% | {metrics['count']:,.0f} images"
  )


class Reporter:
  """Writes train and eval points to the console, metrics.jsonl and TensorBoard."""

  def __init__(
    self, workdir: str | pathlib.Path, resume_step: int, active: bool, console: TextIO | None = None
  ):
    self.active = active
    self._console = console or sys.stdout  # looked up now: tests and tools replace sys.stdout
    if not active:
      return
    path = pathlib.Path(workdir) / METRICS_FILE
    if path.exists():
      _truncate_after(path, resume_step)
    events = pathlib.Path(workdir) / "tensorboard"
    if events.is_dir():
      _drop_events_after(events, resume_step)
    self._file = path.open("a")
    # tf.summary itself, not clu's writers: importing those imports Keras (through TensorBoard's
    # hparams plugin), 1.4 s of every run's start on a 2-core CPU.
    self._writer = tf.summary.create_file_writer(str(events))

  def print(self, text: str) -> None:
    if self.active:
      print(text, file=self._console, flush=True)

  def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
    """One record {"step", "split", **metrics} in metrics.jsonl and TensorBoard (`split/name`)."""
    if not self.active:
      return
    self._file.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
    self._file.flush()
    with self._writer.as_default(step=step):
      for name, value in metrics.items():
        tf.summary.scalar(f"{split}/{name}", value)

  def flush(self) -> None:
    """Puts every point so far on disk, so that a checkpoint never runs ahead of its events (the
    event writer otherwise holds points for up to two minutes)."""
    if self.active:
      self._writer.flush()

  def close(self) -> None:
    if self.active:
      self._file.close()
      self._writer.close()

  def __enter__(self) -> Reporter:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()
