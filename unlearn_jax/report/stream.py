"""The stream mode's figure and report section (`tasks/stream.py`).

`plot` draws the residue on the targets forgotten so far against the round, one line per method,
each method's one-shot result dashed in its colour, and the per-round reference `retrain_k` in
black; `markdown` is the section of report.md. Figures are drawn on a bare Agg canvas, as in
`report/plots.py`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SCORE = "margin"  # the residue the figure shows


def plot(path: str, stream: Mapping[str, Any], score: str = SCORE) -> str:
  """Writes the residue-per-round figure of summary `stream` to `path`; returns `path`."""
  rounds = [entry["round"] for entry in stream["rounds"]]
  figure = Figure(figsize=(6.0, 4.0))
  FigureCanvasAgg(figure)
  axis = figure.subplots()
  names = list(dict.fromkeys(name for entry in stream["rounds"] for name in entry["methods"]))
  for index, name in enumerate(names):
    colour = f"C{index % 10}"
    values = [entry["methods"].get(name, {}).get("residue", {}).get(score, math.nan)
              for entry in stream["rounds"]]
    axis.plot(rounds, values, marker="o", color=colour, label=name)
    one_shot = stream.get("one_shot", {}).get(name, {}).get("residue", {}).get(score)
    if one_shot is not None and math.isfinite(one_shot):
      axis.axhline(one_shot, color=colour, linestyle="--", linewidth=1,
                   label=f"{name} (one shot)")
  reference = [entry["reference"]["residue"].get(score, math.nan) for entry in stream["rounds"]]
  axis.plot(rounds, reference, marker="s", color="black", linestyle=":", label="retrain_k")
  axis.axhline(0.0, color="grey", linewidth=0.5)
  axis.set_xticks(rounds)
  axis.set_xlabel("round (deletion request)")
  axis.set_ylabel(f"residue ({score}) on targets requested so far")
  axis.set_title("Requests over time: 1 = not forgotten, 0 = like clean", fontsize=10)
  axis.legend(fontsize=7)
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=100)
  return path


def _number(value: Any) -> str:
  return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def markdown(summary: Mapping[str, Any], score: str = SCORE) -> str:
  """The report section of `summary['stream']` ('' without one)."""
  stream = summary.get("stream")
  if not stream:
    return ""
  lines = ["## Requests over time (stream)", "",
           f"Residue ({score}) on the targets requested so far and on round 1's targets, test "
           "accuracy and cumulative unlearning seconds after each round; `retrain_k` is "
           "retraining on D minus every request so far. One shot: the method once on "
           "everything requested. Figure: plots/stream_residue.png.", "",
           "| round | requested | model | residue | residue (round 1) | acc test | cost (s) |",
           "|---|---|---|---|---|---|---|"]
  for entry in stream["rounds"]:
    models = {**entry["methods"], "retrain_k": entry["reference"]}
    for name, result in models.items():
      lines.append(
          f"| {entry['round']} | {entry['requested']} | {name} | "
          f"{_number(result['residue'].get(score))} | "
          f"{_number(result['residue_round1'].get(score))} | {_number(result['acc_test'])} | "
          f"{_number(result.get('cost_s', math.nan))} |")
  for name, result in stream.get("one_shot", {}).items():
    lines.append(f"| one shot | everything | {name} | {_number(result['residue'].get(score))} | "
                 f"{_number(result['residue_round1'].get(score))} | "
                 f"{_number(result['acc_test'])} | {_number(result.get('cost_s', math.nan))} |")
  return "\n".join(lines) + "\n"
