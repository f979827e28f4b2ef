"""A sweep's report: its points' results in one table, headline tables and figures.

Input: the sweep record (`report/sweep.json`: every point with its grid values and status) and
each complete point's `report/results.csv` (one row per model and seed) and
`report/per_target.csv`. Output under WORKDIR/report (figures under WORKDIR/report/plots, as a
study's):

* `sweep.csv`: one row per point × model × seed: the point's name and grid values, then the
  point's results.csv columns, copied as written (so a resumed sweep gives the same file).
* `report.md`: residue of every model against the grid's |S(t)| axis (or its first axis), one
  table per residue score, mean ± 95% CI; test and retained accuracy; the points and failures.
* `plots/residue_vs_similar.png`, `plots/residue_vs_ratio.png` (when the grid varies the mask
  ratio r) and `plots/utility_vs_residue.png`; plus whatever registered hooks write
  (`register_plot`, e.g. the reconstruction grids), linked from report.md.

Intervals: with several seeds, the Student-t 95% interval of the per-seed values (as in a
study's summary.json); with one seed, the interval over the point's targets of the per-target
residues in per_target.csv, i.e. the uncertainty from which targets were drawn. The membership
(MIA) residue is one number per model and seed, so with one seed it has no interval.
`original` and `clean` are left out of the residue figures: their residue is 1 and 0 by
definition. `clean_alt` (another seed of `clean`) is drawn dashed: it is the noise floor.

    python -m unlearn_jax.report.sweep_report WORKDIR   # rebuilds the report from sweep.json
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import sys
from typing import Any, Callable, Mapping, Sequence

from absl import logging

from unlearn_jax import utils
from unlearn_jax.evaluate import registry
from unlearn_jax.report import tables

SIMILAR_AXIS = "sed.similar_per_target"
# Figures go under WORKDIR/report/plots, like a study's (report.md links them relative to it).
PLOT_DIR = "plots"
RATIO_AXIS = "sed.ratio"
FLOOR = "clean_alt"
# Residue 1 (original) and 0 (clean) by definition: no information in a residue figure.
DEFINITIONAL = ("original", "clean")
WALL_TIME_COLUMNS = ("time_s",)
PANELS_PER_ROW = 3
AXIS_LABELS = {SIMILAR_AXIS: "|S(t)| (similar samples per target)",
               RATIO_AXIS: "mask ratio r", "sed.block": "block b (pixels)",
               "sed.sigma": "noise σ"}
# Each score's name in titles and headings, as its metric declares it (evaluate/registry.py).
SCORE_LABELS = registry.labels()


@dataclasses.dataclass
class PointData:
  """One complete grid point: its grid values and its study's result rows."""
  name: str
  values: dict[str, Any]
  results: list[dict[str, str]]
  per_target: list[dict[str, str]]


# A hook gets the plots directory (WORKDIR/report/plots) and the points; it writes figures there
# and returns their file names (relative to the plots directory), which report.md links.
PlotHook = Callable[[str, Sequence[PointData]], Sequence[str]]
_PLOT_HOOKS: list[PlotHook] = []


def register_plot(hook: PlotHook) -> None:
  """Adds a figure to every sweep report written in this process (e.g. reconstruction grids)."""
  if hook not in _PLOT_HOOKS:
    _PLOT_HOOKS.append(hook)


def format_value(value: Any) -> str:
  """A grid value as in point names and sweep.csv: 5, 0.25, block_mask, 32+64."""
  if isinstance(value, (tuple, list)):
    return "+".join(format_value(v) for v in value)
  if isinstance(value, float):
    return repr(value)  # the shortest text that reads back as the same float
  return str(value)


def _read_csv(path: str) -> list[dict[str, str]]:
  if not os.path.exists(path):
    return []
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _float(text: Any) -> float:
  try:
    return float(text)
  except (TypeError, ValueError):
    return math.nan


def collect(workdir: str, record: Mapping[str, Any]) -> list[PointData]:
  """The complete points of a sweep record with their results read from their workdirs."""
  points = []
  for entry in record["points"]:
    if entry["status"] != "ok":
      continue
    report_dir = os.path.join(workdir, entry["workdir"], "report")
    points.append(PointData(entry["name"], dict(entry["values"]),
                            _read_csv(os.path.join(report_dir, "results.csv")),
                            _read_csv(os.path.join(report_dir, "per_target.csv"))))
  return points


def sweep_rows(points: Sequence[PointData]) -> list[dict[str, str]]:
  """sweep.csv rows: point, grid values, then the point's results.csv row as written."""
  rows = []
  for point in points:
    values = {path: format_value(value) for path, value in point.values.items()}
    rows.extend({"point": point.name, **values, **row} for row in point.results)
  return rows


# ----------------------------------------------------------------------------------------------
# Estimates.


def _per_target(point: PointData, model: str, column: str) -> list[float] | None:
  """Per-target values behind `column` for a one-seed point; None if it has none."""
  kind, _, score = column.partition(".")
  rows = [r for r in point.per_target if r.get("model") == model]
  if kind == "residue" and rows and f"residue_{score}" in rows[0]:
    return [_float(r[f"residue_{score}"]) for r in rows]
  if kind == "residue_abs" and rows and score in rows[0]:
    clean = {(r.get("seed"), r["target_id"]): _float(r[score]) for r in point.per_target
             if r.get("model") == "clean"}
    return [_float(r[score]) - clean.get((r.get("seed"), r["target_id"]), math.nan)
            for r in rows]
  return None


def estimate(point: PointData, model: str, column: str) -> tuple[float, float, str]:
  """(mean, 95% CI half-width, what the interval is over: 'seeds', 'targets' or 'none')."""
  values = [_float(r.get(column)) for r in point.results if r["method"] == model]
  finite = [v for v in values if math.isfinite(v)]
  if len(finite) >= 2:
    mean, half = tables.mean_ci95(finite)
    return mean, half, "seeds"
  if len(values) == 1 and finite:
    per_target = _per_target(point, model, column)
    if per_target is not None:
      return finite[0], tables.mean_ci95(per_target)[1], "targets"
  return (finite[0] if finite else math.nan), math.nan, "none"


def _varying(points: Sequence[PointData]) -> list[str]:
  """Grid axes with more than one value among the points."""
  axes = list(dict.fromkeys(path for p in points for path in p.values))
  return [a for a in axes if len({format_value(p.values.get(a)) for p in points}) > 1]


def x_axis(points: Sequence[PointData]) -> str | None:
  """The axis tables and the main figure run along: |S(t)| if the grid has it."""
  axes = list(dict.fromkeys(path for p in points for path in p.values))
  return SIMILAR_AXIS if SIMILAR_AXIS in axes else (axes[0] if axes else None)


def _facets(points: Sequence[PointData], axis: str | None,
            always: Sequence[str] = ()) -> list[dict[str, Any]]:
  """Every combination of the other varying axes' values (one panel row / table each); the
  axes in `always` are named even when the points hold one value of them."""
  present = {path for p in points for path in p.values}
  others = [a for a in dict.fromkeys([*always, *_varying(points)]) if a != axis and a in present]
  seen: dict[str, dict[str, Any]] = {}
  for point in sorted(points, key=lambda p: [_sort_key(p.values.get(a)) for a in others]):
    facet = {a: point.values.get(a) for a in others}
    seen.setdefault(repr(facet), facet)
  return list(seen.values())


def _sort_key(value: Any) -> tuple:
  return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, str(value))


def _series(points, model, column, axis, facet):
  """[(x, mean, half)] of one model along `axis` within `facet`, sorted by x."""
  out = []
  for point in points:
    if any(format_value(point.values.get(a)) != format_value(v) for a, v in facet.items()):
      continue
    mean, half, _ = estimate(point, model, column)
    if math.isfinite(mean):
      out.append((point.values.get(axis) if axis else 0, mean, half))
  return sorted(out, key=lambda item: _sort_key(item[0]))


def models_of(points: Sequence[PointData], methods: Sequence[str] = ()) -> list[str]:
  """Models in report order: references, the configured methods, anything else."""
  present = list(dict.fromkeys(r["method"] for p in points for r in p.results))
  order = ["original", "retrain", "clean", FLOOR, *methods]
  return [m for m in order if m in present] + [m for m in present if m not in order]


def residue_columns(points: Sequence[PointData], scores: Sequence[str]) -> list[str]:
  """`residue.<score>` for every configured score the studies report (and the absolute margin)."""
  columns = []
  for score in scores:
    columns.append(f"residue.{score}")
    if score == "margin":
      columns.append("residue_abs.margin")
  return [c for c in columns if any(math.isfinite(_float(r.get(c)))
                                    for p in points for r in p.results)]


def column_label(column: str) -> str:
  kind, _, score = column.partition(".")
  name = SCORE_LABELS.get(score, score)
  if kind == "residue":
    return f"{name} residue"
  if kind == "residue_abs":
    return f"{name} residue, absolute"
  return {"acc.test": "test accuracy", "acc.rest": "accuracy on R (retained)"}.get(column,
                                                                                   column)


# ----------------------------------------------------------------------------------------------
# Figures.


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _style(model: str, models: Sequence[str]) -> dict[str, Any]:
  """One look per model across every figure (its colour from its place in `models`)."""
  if model == FLOOR:
    return {"color": "0.45", "linestyle": "--", "label": f"{FLOOR} (noise floor)"}
  if model == "retrain":
    return {"color": "black", "linewidth": 2.2, "label": "retrain"}
  return {"color": f"C{models.index(model) % 10}", "label": model}


def plot_residue(points: Sequence[PointData], axis: str, columns: Sequence[str],
                 models: Sequence[str], path: str, skip_zero_similar: bool = False) -> bool:
  """Residue vs `axis`: one panel per residue column × combination of the other axes.

  Returns:
    False (and writes nothing) when there is nothing to draw.
  """
  if skip_zero_similar:  # no similar samples: nothing for r to act on
    points = [p for p in points if p.values.get(SIMILAR_AXIS) != 0]
  facets = _facets(points, axis, always=(SIMILAR_AXIS,) if skip_zero_similar else ())
  drawn = [m for m in models if m not in DEFINITIONAL]
  if not points or not columns or not drawn:
    return False
  # The grid's values sit evenly spaced, labelled with their values (|S(t)| = 0, 1, 5, 20, 50
  # would crowd on a linear axis, and 0 has no place on a log axis).
  ticks = sorted({format_value(p.values.get(axis)): p.values.get(axis)
                  for p in points}.values(), key=_sort_key)
  position = {format_value(value): index for index, value in enumerate(ticks)}
  plt = _pyplot()
  # At most PANELS_PER_ROW panels side by side: a facet's scores wrap onto further rows.
  per_row = min(len(columns), PANELS_PER_ROW)
  rows_per_facet = -(-len(columns) // per_row)
  figure, panels = plt.subplots(len(facets) * rows_per_facet, per_row, squeeze=False,
                                figsize=(3.8 * per_row, 3.1 * len(facets) * rows_per_facet))
  used = set()
  for row, facet in enumerate(facets):
    for col, column in enumerate(columns):
      panel = panels[row * rows_per_facet + col // per_row][col % per_row]
      used.add(id(panel))
      for model in drawn:
        series = _series(points, model, column, axis, facet)
        if not series:
          continue
        values, means, halves = (list(v) for v in zip(*series))
        xs = [position[format_value(value)] for value in values]
        line, = panel.plot(xs, means, marker="o", markersize=3.5, **_style(model, models))
        lower = [m - h if math.isfinite(h) else m for m, h in zip(means, halves)]
        upper = [m + h if math.isfinite(h) else m for m, h in zip(means, halves)]
        panel.fill_between(xs, lower, upper, color=line.get_color(), alpha=0.15, linewidth=0)
      if column.startswith("residue."):
        for level in (0.0, 1.0):
          panel.axhline(level, color="0.8", linewidth=0.8, zorder=0)
      panel.set_xticks(range(len(ticks)), [format_value(t) for t in ticks])
      panel.set_xlim(-0.3, len(ticks) - 0.7)
      title = column_label(column)
      if facet:
        title += "\n" + ", ".join(f"{k.rsplit('.', 1)[-1]}={format_value(v)}"
                                  for k, v in facet.items())
      panel.set_title(title, fontsize=9)
      panel.set_xlabel(AXIS_LABELS.get(axis, axis), fontsize=8)
      panel.tick_params(labelsize=7)
  for panel in panels.flat:
    panel.set_visible(id(panel) in used)
  handles, labels = panels[0][0].get_legend_handles_labels()
  figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                frameon=False)
  figure.tight_layout()
  _save(figure, path)
  return True


def plot_utility(points: Sequence[PointData], residue_column: str, models: Sequence[str],
                 path: str) -> bool:
  """Accuracy on R and on the test split against residue: one dot per model and grid point."""
  if not points or not residue_column:
    return False
  plt = _pyplot()
  figure, panels = plt.subplots(1, 2, figsize=(9.0, 3.6), squeeze=False)
  for panel, accuracy in zip(panels[0], ("acc.rest", "acc.test")):
    for model in models:
      xs, ys, xerr, yerr = [], [], [], []
      for point in points:
        x, x_half, _ = estimate(point, model, residue_column)
        y, y_half, _ = estimate(point, model, accuracy)
        if math.isfinite(x) and math.isfinite(y):
          xs.append(x), ys.append(y)
          xerr.append(x_half if math.isfinite(x_half) else 0.0)
          yerr.append(y_half if math.isfinite(y_half) else 0.0)
      if xs:
        style = _style(model, models)
        panel.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="o", markersize=4, capsize=2,
                       color=style["color"], label=style["label"], alpha=0.85)
    panel.set_xlabel(column_label(residue_column), fontsize=8)
    panel.set_ylabel(column_label(accuracy), fontsize=8)
    panel.tick_params(labelsize=7)
  handles, labels = panels[0][0].get_legend_handles_labels()
  figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                frameon=False)
  figure.suptitle("utility vs residue (one dot per model and grid point)", fontsize=9)
  figure.tight_layout()
  _save(figure, path)
  return True


def _save(figure, path: str) -> None:
  """Saves atomically (readers never see half a PNG) and closes the figure."""
  tmp = f"{path}.tmp{os.getpid()}.png"
  figure.savefig(tmp, dpi=110, bbox_inches="tight")
  os.replace(tmp, path)
  _pyplot().close(figure)


# ----------------------------------------------------------------------------------------------
# report.md.


def _cell(mean: float, half: float, digits: int = 2) -> str:
  if not math.isfinite(mean):
    return "n/a"
  return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if math.isfinite(half) else "")


def headline_table(points: Sequence[PointData], column: str, models: Sequence[str],
                   axis: str | None, facet: Mapping[str, Any], digits: int = 2) -> str:
  """Models × values of `axis` (within `facet`), mean ± 95% CI of `column`."""
  chosen = [p for p in points if all(format_value(p.values.get(a)) == format_value(v)
                                     for a, v in facet.items())]
  chosen.sort(key=lambda p: _sort_key(p.values.get(axis)) if axis else (0,))
  label = "\\|S(t)\\|" if axis == SIMILAR_AXIS else (axis.rsplit(".", 1)[-1] if axis else "point")
  header = [f"{label}={format_value(p.values.get(axis))}" if axis else p.name for p in chosen]
  lines = ["| model | " + " | ".join(header) + " |", "|" + "---|" * (len(chosen) + 1)]
  for model in models:
    cells = [_cell(*estimate(p, model, column)[:2], digits) for p in chosen]
    if any(c != "n/a" for c in cells):
      lines.append(f"| {model} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def markdown_report(workdir: str, record: Mapping[str, Any], points: Sequence[PointData],
                    scores: Sequence[str], figures: Sequence[tuple[str, str]]) -> str:
  """report.md: setting, headline tables per score, utility, figures, points and failures."""
  axis = x_axis(points)
  facets = _facets(points, axis) or [{}]
  models = models_of(points, record.get("methods", ()))
  grid = "; ".join(f"`{path}` ∈ {{{', '.join(format_value(v) for v in values)}}}"
                   for path, values in record["grid"].items()) or "none (one point)"
  sources = {estimate(p, m, "residue.margin")[2] for p in points for m in models}
  interval = ("a 95% Student-t interval over the seeds" if "seeds" in sources else
              "a 95% Student-t interval over each point's targets (one seed; per_target.csv)")
  lines = [
      f"# Similarity sweep: {record.get('dataset')} / {record.get('model')}", "",
      f"{record['num_points']} grid point(s) ({record['num_studies']} studies), "
      f"{record['complete']} complete, {record['failed']} failed. Grid: {grid}. Methods: "
      f"{', '.join(record.get('methods', [])) or 'references only'}; seeds "
      f"{record.get('seeds')}. Cells: mean ± half-width of {interval}; n/a: undefined "
      "(the score's |f(original) − f(clean)| is below eval.min_gap for every target).", "",
      "Residue (f(M) − f(clean)) / (f(original) − f(clean)): 1 = nothing forgotten, 0 = like "
      "the clean model that never saw T nor S. `clean_alt` (another seed of clean) is the "
      "noise floor; `absolute` is f(M) − f(clean) in the score's unit (logits for margin).",
  ]
  for column in residue_columns(points, scores) + ["acc.test", "acc.rest"]:
    chosen_models = models if column.startswith("acc.") else [
        m for m in models if m not in DEFINITIONAL]
    lines += ["", f"## {column_label(column)}"]
    for facet in facets:
      if facet:
        lines += ["", "### " + ", ".join(f"{k} = {format_value(v)}" for k, v in facet.items())]
      lines += ["", headline_table(points, column, chosen_models, axis, facet,
                                   3 if column.startswith("acc.") else 2)]
  if figures:
    lines += ["", "## Figures", ""]
    lines += [f"![{title}]({PLOT_DIR}/{name})" for name, title in figures]
  lines += ["", "## Points", "", "| point | grid values | status | time | note |",
            "|---|---|---|---|---|"]
  for entry in record["points"]:
    values = ", ".join(f"{k}={format_value(v)}" for k, v in entry["values"].items())
    time_text = utils.format_seconds(entry["time_s"]) if entry.get("time_s") else (
        "done earlier" if entry["status"] == "ok" else "")
    note = entry.get("error", "") or "; ".join(
        f"{k}: {v}" for k, v in (entry.get("method_errors") or {}).items())
    link = os.path.join("..", entry["workdir"], "report", "report.md")
    lines.append(f"| [{entry['name']}]({link}) | {values} | {entry['status']} | {time_text} "
                 f"| {note.replace('|', '/')} |")
  extra = _point_figures(workdir, record)
  if extra:
    lines += ["", "## Figures of the points", ""] + [f"- [{path}]({path})" for path in extra]
  return "\n".join(lines) + "\n"


def _point_figures(workdir: str, record: Mapping[str, Any]) -> list[str]:
  """Figures the points' own studies wrote (report/plots/*.png), relative to WORKDIR/report."""
  found = []
  for entry in record["points"]:
    plots = os.path.join(workdir, entry["workdir"], "report", PLOT_DIR)
    if os.path.isdir(plots):
      found += [os.path.join("..", entry["workdir"], "report", PLOT_DIR, name)
                for name in sorted(os.listdir(plots)) if name.endswith(".png")]
  return list(dict.fromkeys(found))


def write(workdir: str, record: Mapping[str, Any],
          scores: Sequence[str] = ("margin", "lira", "mia", "recon_ssim")) -> str:
  """Writes sweep.csv and report.md under WORKDIR/report, the figures under report/plots.

  Returns:
    The text of report.md.
  """
  report_dir = os.path.join(workdir, "report")
  plot_dir = os.path.join(report_dir, PLOT_DIR)
  os.makedirs(plot_dir, exist_ok=True)
  points = collect(workdir, record)
  utils.write_text(os.path.join(report_dir, "sweep.csv"), tables.to_csv(sweep_rows(points)))
  models = models_of(points, record.get("methods", ()))
  columns = residue_columns(points, scores)
  axis, figures = x_axis(points), []
  if axis and plot_residue(points, axis, columns, models,
                           os.path.join(plot_dir, "residue_vs_similar.png")):
    figures.append(("residue_vs_similar.png", f"residue vs {AXIS_LABELS.get(axis, axis)}"))
  if RATIO_AXIS in _varying(points) and plot_residue(
      points, RATIO_AXIS, columns, models, os.path.join(plot_dir, "residue_vs_ratio.png"),
      skip_zero_similar=True):
    figures.append(("residue_vs_ratio.png", "residue vs mask ratio r"))
  if columns and plot_utility(points, columns[0], models,
                              os.path.join(plot_dir, "utility_vs_residue.png")):
    figures.append(("utility_vs_residue.png", "retained and test accuracy vs residue"))
  for hook in _PLOT_HOOKS:
    try:
      figures += [(name, os.path.splitext(name)[0].replace("_", " "))
                  for name in hook(plot_dir, points)]
    except Exception as error:  # pylint: disable=broad-except
      # An extra figure must not cost the sweep its report.
      logging.warning("sweep report: plot hook %r failed: %s: %s", hook, type(error).__name__,
                      error)
  text = markdown_report(workdir, record, points, scores, figures)
  utils.write_text(os.path.join(report_dir, "report.md"), text)
  return text


def main(argv: Sequence[str]) -> None:
  """Rebuilds WORKDIR/report from WORKDIR/report/sweep.json (e.g. after adding a plot hook)."""
  if len(argv) != 2:
    sys.exit("usage: python -m unlearn_jax.report.sweep_report WORKDIR")
  workdir = argv[1]
  record = utils.read_json(os.path.join(workdir, "report", "sweep.json"))
  config = utils.read_json(os.path.join(workdir, "sweep_config.json"))
  print(write(workdir, record, tuple(config.get("report", {}).get("scores", ("margin",)))))


if __name__ == "__main__":
  main(sys.argv)
