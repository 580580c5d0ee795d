"""Where a step's time goes, by part of the network: ours from jax.profiler's per-op trace,
PyTorch's from torch.profiler, sorted into the same parts so that the two read side by side.

A part is a kind of layer and a pass, e.g. "convolution, backward". Ours: each XLA op (a fusion,
a convolution, a copy) is traced with its HLO name, whose `op_name` metadata in the compiled
module says which flax module and which pass (`jvp` forward, `transpose(jvp)` backward) it came
from. PyTorch's: each top-level operator of the step (forward aten ops, autograd's backward
functions, the optimizer's step) with its children's time included.
"""

from __future__ import annotations

import collections
import pathlib
import re
import tempfile
from collections.abc import Callable

import jax

# (kind, pattern on the op's module path in the network), first match wins. The max pool's own
# ops are slices, maxima, compares and pads under its module (pool0, pool3, ...); a 1x1
# convolution's weight gradient on a CPU is a transpose and a dot under its `conv` module.
_HLO_KINDS = (
  ("BatchNorm", r"/bn/"),
  ("convolution", r"conv_general_dilated|(^|/)conv/"),
  ("max pool", r"(^|/)pool\d+/"),
  ("average pool", r"avgpool|nhwc,ih,jw->nijc"),
  ("concatenation", r"(^|/)(concatenate|split)$"),
  ("classifier and dropout", r"classifier|(^|/)fc\d|dropout"),
  ("ReLU", r"relu|(^|/)(gt|select_n)$"),
)
# (kind, pattern on PyTorch's operator or autograd function name), first match wins.
_TORCH_KINDS = (
  ("BatchNorm", r"batch_?norm"),
  ("convolution", r"conv"),
  ("max pool", r"max_?pool"),
  ("average pool", r"avg_?pool|mean"),
  ("concatenation", r"::cat$|catbackward"),
  ("classifier and dropout", r"linear|addmm|::t$|tbackward|dropout|flatten|view|reshape"),
  ("ReLU", r"relu|threshold"),
)
# XLA's own ops, which no op of ours asked for and so carry no op_name: by their HLO name.
_XLA_OWN = (
  ("convolution, XLA's own", r"^conv"),
  ("layout copies, XLA's own", r"^(transpose|copy|wrapped_reverse|reverse)"),
)
UPDATE = "loss, update and metrics"  # ours: every op outside the network; theirs: loss, SGD
OTHER = "other"


def _kind(path: str, rules: tuple[tuple[str, str], ...]) -> str:
  return next((kind for kind, pattern in rules if re.search(pattern, path, re.I)), OTHER)


def hlo_part(op: str, op_name: str | None) -> str:
  """The part of the step one XLA op belongs to, from its HLO name and `op_name` metadata."""
  if not op_name:
    return _kind(op, _XLA_OWN)
  backward = re.search(r"transpose\(jvp\(\w*GoogLeNet\w*\)\)/(.*)", op_name)
  forward = re.search(r"GoogLeNet\w*\)?/(.*)", op_name)
  if not (backward or forward):
    return UPDATE
  path, direction = (backward.group(1), "backward") if backward else (forward.group(1), "forward")
  return f"{_kind(path, _HLO_KINDS)}, {direction}"


def torch_part(name: str) -> str:
  """The part of the step one top-level PyTorch event belongs to."""
  if name.startswith("Optimizer.") or "AccumulateGrad" in name:
    return UPDATE
  if name.startswith("autograd::engine::evaluate_function: "):
    function = name.split(": ", 1)[1]
    kind = _kind(function, _TORCH_KINDS)
    return UPDATE if kind == OTHER else f"{kind}, backward"
  kind = _kind(name, _TORCH_KINDS)
  return UPDATE if kind == OTHER else f"{kind}, forward"


def _op_names(hlo_text: str) -> dict[str, str]:
  """Each instruction's `op_name` metadata in a compiled module's text."""
  names = {}
  for match in re.finditer(r"^\s*(?:ROOT )?%?([\w.-]+) = [^\n]*", hlo_text, re.M):
    op_name = re.search(r'op_name="([^"]*)"', match.group(0))
    names[match.group(1)] = op_name.group(1) if op_name else ""
  return names


def profile_jax(step: Callable[[], None], hlo_text: str, steps: int) -> dict[str, float]:
  """Seconds per step of XLA op time in each part, over `steps` traced calls of `step` (whose
  compiled module's text is `hlo_text`). Ops of one step run on several threads at once, so the
  parts can add up to more than the step."""
  with tempfile.TemporaryDirectory() as folder:
    jax.profiler.start_trace(folder)
    for _ in range(steps):
      step()
    jax.profiler.stop_trace()
    trace = next(pathlib.Path(folder).rglob("*.xplane.pb"))
    data = jax.profiler.ProfileData.from_file(str(trace))
  op_names = _op_names(hlo_text)
  starts, ends = collections.defaultdict(list), collections.defaultdict(list)
  for plane in data.planes:
    for line in plane.lines:
      for event in line.events:
        op = dict(event.stats).get("hlo_op")
        if op is not None:
          starts[op].append((event.start_ns, event.start_ns + event.duration_ns))
        elif event.name.startswith("end: "):  # an op's completion, later than its event's end
          ends[event.name[5:]].append(event.start_ns + event.duration_ns)
  seconds: collections.Counter = collections.Counter()
  for op, spans in starts.items():
    spans.sort()
    if len(ends[op]) == len(spans):  # asynchronous: done at its "end:" event
      spans = [(start, end) for (start, _), end in zip(spans, sorted(ends[op]), strict=True)]
    for start, end in spans:
      seconds[hlo_part(op, op_names.get(op))] += (end - start) * 1e-9 / steps
  return dict(seconds)


def profile_torch(step: Callable[[], None], steps: int) -> dict[str, float]:
  """Seconds per step of each part of PyTorch's step, over `steps` profiled calls of `step`."""
  from torch.profiler import ProfilerActivity, profile  # pylint: disable=import-outside-toplevel

  with profile(activities=[ProfilerActivity.CPU]) as trace:
    for _ in range(steps):
      step()
  seconds: collections.Counter = collections.Counter()
  for event in trace.events():
    if event.cpu_parent is None:  # top level: its children's time is in its own
      seconds[torch_part(event.name)] += event.cpu_time_total * 1e-6 / steps
  return dict(seconds)
