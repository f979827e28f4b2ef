"""Figures for the report: targets next to their best reconstructions.

Researchers want to look at reconstructions, not only read SSIM numbers (issue 5): a row per
target shows the target, then the reconstruction that matches it best from each model (e.g.
`original`, `retrain`, `clean` and an unlearning method), each titled with its SSIM to the target.
Figures are drawn on a bare Agg canvas, so no display or global matplotlib backend is touched.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from unlearn_jax.evaluate import similarity


def _show(axis, image: np.ndarray, title: str) -> None:
  """Draws one (H, W, C) image in [0, 1] (grey when C == 1) without ticks."""
  image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
  if image.shape[-1] == 1:
    axis.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
  else:
    axis.imshow(image)
  axis.set_title(title, fontsize=8)
  axis.set_xticks([])
  axis.set_yticks([])


def save_reconstruction_grid(path: str, targets: np.ndarray,
                             matches: Mapping[str, np.ndarray], *,
                             target_names: Sequence[str] | None = None,
                             title: str | None = None, cell_inches: float = 1.3) -> str:
  """Writes a PNG: one row per target, then its best-matching reconstruction from each model.

  Args:
    path: output file (.png); parent directories are created.
    targets: (N, H, W, C) float images in [0, 1].
    matches: model name -> (N, H, W, C) images in [0, 1], row i being the reconstruction from
      that model that best matches target i (see `similarity.best_match`). Columns follow the
      mapping's order and are titled "name" and the SSIM to the target.
    target_names: optional title of each target (e.g. its id); default "target i".
    title: optional figure title.
    cell_inches: size of one image cell.

  Returns:
    `path`.

  Raises:
    ValueError: if there are no targets or a model's images do not match the targets' shape.
  """
  targets = np.asarray(targets, np.float32)
  if targets.ndim != 4 or len(targets) == 0:
    raise ValueError(f"targets must be a non-empty (N, H, W, C) batch; got {targets.shape}.")
  for name, images in matches.items():
    if np.shape(images) != targets.shape:
      raise ValueError(f"matches[{name!r}] has shape {np.shape(images)}; expected the targets' "
                       f"shape {targets.shape}.")
  if target_names is not None and len(target_names) != len(targets):
    raise ValueError(f"target_names has {len(target_names)} entries for {len(targets)} "
                     "targets.")
  scores = {name: similarity.ssim(targets, images) for name, images in matches.items()}
  rows, cols = len(targets), 1 + len(matches)
  figure = Figure(figsize=(cell_inches * cols, cell_inches * rows + (0.4 if title else 0.0)))
  FigureCanvasAgg(figure)
  axes = np.asarray(figure.subplots(rows, cols, squeeze=False))
  for row in range(rows):
    _show(axes[row, 0], targets[row],
          target_names[row] if target_names is not None else f"target {row}")
    for col, (name, images) in enumerate(matches.items(), start=1):
      _show(axes[row, col], images[row], f"{name}\nSSIM {scores[name][row]:.2f}")
  if title:
    figure.suptitle(title, fontsize=10)
  figure.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=100)
  return path
