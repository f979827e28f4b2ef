"""The speed benchmarks, side by side with PyTorch, in one process and one run.

    python -m benchmarks.run                                  # everything (~10 min, 2 cores)
    python -m benchmarks.run --only=cnn,pergrad --repeats=7   # pieces

1. `cnn`: the CNN train step at batch 256 on MNIST-shaped data: unlearn_jax's jitted step (one
   call per step, as `train.fit` runs it by default), its `lax.scan` variant (`--steps_per_call`
   steps per call), the CNN before its custom gradients (`--baseline`), and the same model and
   SGD step in PyTorch eager. Examples/s, ratios, and GFLOP/s from XLA's cost analysis as a
   fraction of the measured float32 matmul peak.
2. `pergrad`: per-example gradients of the CNN, `jax.vmap(jax.grad)` vs `torch.func.vmap(grad)`.
3. `ensemble`: K = 8 models trained at once (`ensemble.train_ensemble`, vmapped) vs a loop.
4. `study`: the whole `configs/sed_mnist.py:runlocal` study: wall time, time per stage, and
   the time spent compiling.

Both sides get the same synthetic data; they are timed alternately (benchmarks/timing.py) and
medians reported. Before timing, one step of each side from the same parameters must give the
same parameters (and the same per-example gradients), so the two sides compute the same thing.
`--hugepages=auto` (default) re-runs the process with GLIBC_TUNABLES=glibc.malloc.hugetlb=1:
XLA:CPU allocates its temporary buffers per call and page-faults them in 4 KiB pages, which
cost ~30% of the CNN step on a 2-core VM; PyTorch runs in the same process with the same
setting. `--json` writes every number to a file (RESULTS.md quotes them).
"""

from __future__ import annotations

import collections
import json
import logging as py_logging
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from benchmarks import baseline, flops, timing
from launch import common as launch_common
from unlearn_jax import models, parallel, train

_ONLY = flags.DEFINE_list("only", ["cnn", "pergrad", "ensemble", "study"], "benchmarks to run")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed repetitions of each side")
_BATCH = flags.DEFINE_integer("batch_size", 256, "cnn: batch size")
_STEPS = flags.DEFINE_integer("steps", 8, "cnn: steps per timed unit")
_STEPS_PER_CALL = flags.DEFINE_integer("steps_per_call", 8, "cnn: steps per lax.scan call")
_BASELINE = flags.DEFINE_bool("baseline", True, "cnn: also time the CNN before its custom VJPs")
_PERGRAD_BATCH = flags.DEFINE_integer("pergrad_batch", 64, "pergrad: examples")
_MEMBERS = flags.DEFINE_integer("members", 8, "ensemble: models trained at once")
_HUGEPAGES = flags.DEFINE_enum("hugepages", "auto", ["auto", "off"],
                               "auto: rerun with GLIBC_TUNABLES=glibc.malloc.hugetlb=1")
_JSON = flags.DEFINE_string("json", "", "write all results to this JSON file")

LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4


def _torch():
  try:
    from benchmarks import torch_ref  # pylint: disable=g-import-not-at-top
    return torch_ref
  except ImportError:
    logging.warning("torch is not installed (pip install -e '.[bench]'): JAX side only")
    return None


def _images(rng: np.random.Generator, *shape: int) -> np.ndarray:
  return rng.integers(0, 256, (*shape, 28, 28, 1), dtype=np.uint8)


def _jax_state(model, params=None):
  state = train.create_state(model, jax.random.key(0), (28, 28, 1),
                             train.make_optimizer("sgd", LR, 1000, momentum=MOMENTUM,
                                                  weight_decay=WEIGHT_DECAY))
  return state if params is None else state.replace(params=params)


def bench_cnn() -> dict:
  """Train-step throughput of the CNN: unlearn_jax (step, scan, baseline) vs PyTorch eager."""
  batch, steps = _BATCH.value, _STEPS.value
  rng = np.random.default_rng(0)
  host = {"image": _images(rng, steps, batch), "label": rng.integers(0, 10, (steps, batch))
          .astype(np.int32), "weight": np.ones((steps, batch), np.float32)}
  mesh = parallel.make_mesh()
  batches = [parallel.global_batch({k: v[i] for k, v in host.items()}, mesh)
             for i in range(steps)]
  key = jax.random.key(0)
  model = models.get("cnn", 10)
  states = {"jax_step": _jax_state(model)}
  params = jax.device_get(states["jax_step"].params)
  states["jax_scan"] = _jax_state(model, params)
  if _BASELINE.value:
    states["jax_before"] = _jax_state(baseline.FlaxLayersCNN(10), params)
  result = {"batch": batch, "steps_per_unit": steps}
  result["xla_flops"] = flops.xla_flops(train.jit_train_step, states["jax_step"], batches[0], key)
  result["textbook_flops"] = flops.cnn_flops(batch, (28, 28, 1), (32, 64), 128, 10)["train_step"]
  if "jax_before" in states:
    result["xla_flops_before"] = flops.xla_flops(train.jit_train_step, states["jax_before"],
                                                 batches[0], key)

  def one_step_per_call(name):
    def run():
      state = states[name]
      for device_batch in batches:
        state, metrics = train.jit_train_step(state, device_batch, key)
      states[name] = jax.block_until_ready(state)
    return run

  per_call = _STEPS_PER_CALL.value
  chunks = [parallel.global_batch({k: v[s:s + per_call] for k, v in host.items()}, mesh, axis=1)
            for s in range(0, steps, per_call)]

  def scan_calls():
    state = states["jax_scan"]
    for chunk in chunks:
      state, _ = train.jit_train_steps(state, chunk, key)
    states["jax_scan"] = jax.block_until_ready(state)

  sides = {"jax_step": one_step_per_call("jax_step"), "jax_scan": scan_calls}
  if "jax_before" in states:
    sides["jax_before"] = one_step_per_call("jax_before")
  torch_ref = _torch()
  if torch_ref is not None:
    import torch  # pylint: disable=g-import-not-at-top
    torch_model = torch_ref.TorchCNN(10, (28, 28, 1))
    torch_ref.load_flax_params(torch_model, params)
    torch_step = torch_ref.make_train_step(torch_model, LR, MOMENTUM, WEIGHT_DECAY)
    torch_batches = [(torch.from_numpy(host["image"][i]), torch.from_numpy(host["label"][i])
                      .long()) for i in range(steps)]
    # Same function: one step from the same parameters gives the same parameters.
    check = jax.device_get(train.jit_train_step(_jax_state(model, params), batches[0], key)[0]
                           .params)
    torch_step(*torch_batches[0])
    result["max_param_diff_after_one_step"] = float(max(jax.tree.leaves(jax.tree.map(
        lambda a, b: np.max(np.abs(a - b)), check, torch_ref.flax_like_params(torch_model)))))
    assert result["max_param_diff_after_one_step"] < 1e-4, result

    def torch_unit():
      for images, labels in torch_batches:
        torch_step(images, labels)
    sides["torch_eager"] = torch_unit
  # The peak before and after the timings: the best of both (load only ever lowers it).
  before = flops.matmul_peak()
  times = timing.interleaved(sides, _REPEATS.value)
  after = flops.matmul_peak()
  peak = max(before, after, key=lambda p: p["peak_gflops"])
  result["matmul_peak"] = {**peak, "measured": [before["peak_gflops"], after["peak_gflops"]]}
  for name, t in times.items():
    per_step = t["median"] / steps
    t.update(step_ms=1000 * per_step, examples_per_s=batch / per_step)
    count = result["xla_flops_before"] if name == "jax_before" else result["xla_flops"]
    t["gflops"] = count / per_step / 1e9
    t["fraction_of_peak"] = t["gflops"] / peak["peak_gflops"]
  result["times"] = times
  if "torch_eager" in times:
    result["speedup_vs_torch"] = {name: times["torch_eager"]["median"] / t["median"]
                                  for name, t in times.items() if name != "torch_eager"}
  return result


def bench_pergrad() -> dict:
  """Per-example gradients of the CNN: jit(vmap(grad)) vs torch.func.vmap(grad)."""
  count = _PERGRAD_BATCH.value
  rng = np.random.default_rng(1)
  images, labels = _images(rng, count), rng.integers(0, 10, count).astype(np.int32)
  model = models.get("cnn", 10)
  params = jax.device_get(_jax_state(model).params)  # host copy, also loaded into torch
  device_params = jax.device_put(params)  # placed once, not on every timed call

  def example_loss(p, image, label):
    logits = model.apply({"params": p}, train.to_float(image)[None])
    return -jax.nn.log_softmax(logits)[0, label]

  per_example = jax.jit(jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0)))
  device_images, device_labels = jnp.asarray(images), jnp.asarray(labels)
  sides = {"jax_vmap_grad": lambda: jax.block_until_ready(
      per_example(device_params, device_images, device_labels))}
  result = {"examples": count}
  torch_ref = _torch()
  if torch_ref is not None:
    import torch  # pylint: disable=g-import-not-at-top
    torch_model = torch_ref.TorchCNN(10, (28, 28, 1))
    torch_ref.load_flax_params(torch_model, params)
    torch_grads = torch_ref.make_per_example_grads(torch_model)
    torch_images, torch_labels = torch.from_numpy(images), torch.from_numpy(labels).long()
    ours = jax.device_get(per_example(device_params, device_images, device_labels))
    theirs = torch_grads(torch_images, torch_labels)
    kernel = theirs["convs.1.weight"].permute(0, 3, 4, 2, 1).numpy()
    result["max_rel_diff_conv_1_kernel"] = float(
        np.max(np.abs(ours["Conv_1"]["kernel"] - kernel)) / np.max(np.abs(kernel)))
    assert result["max_rel_diff_conv_1_kernel"] < 1e-3, result
    sides["torch_func_vmap_grad"] = lambda: torch_grads(torch_images, torch_labels)
  times = timing.interleaved(sides, _REPEATS.value)
  for t in times.values():
    t["examples_per_s"] = count / t["median"]
  result["times"] = times
  if "torch_func_vmap_grad" in times:
    result["speedup_vs_torch"] = (times["torch_func_vmap_grad"]["median"]
                                  / times["jax_vmap_grad"]["median"])
  return result


def bench_ensemble() -> dict:
  """K models at once (vmap) vs a loop: the MLP (vmapped) and the CNN."""
  from benchmarks import ensemble as ensemble_bench  # pylint: disable=g-import-not-at-top
  repeats = max(3, _REPEATS.value // 2)
  return {name: ensemble_bench.compare(name, _MEMBERS.value, repeats=repeats)
          for name in ("mlp", "cnn")}


class _StageTimes(py_logging.Handler):
  """Records when each `stage: ...` log line of the study appears."""

  def __init__(self):
    super().__init__()
    self.stages: list[tuple[str, float]] = []

  def emit(self, record: py_logging.LogRecord) -> None:
    message = record.getMessage()
    if message.startswith("stage: "):
      self.stages.append((message[len("stage: "):].split(" (")[0], time.perf_counter()))


def bench_study() -> dict:
  """configs/sed_mnist.py:runlocal end to end: wall time, stages, compilation."""
  sys.path.insert(0, os.getcwd())
  from configs import sed_mnist  # pylint: disable=g-import-not-at-top
  from unlearn_jax import study  # pylint: disable=g-import-not-at-top
  config = sed_mnist.get_config("runlocal")
  handler = _StageTimes()
  py_logging.getLogger("absl").addHandler(handler)
  try:
    with tempfile.TemporaryDirectory() as workdir, train.CompileCounter() as compiles:
      start = time.perf_counter()
      summary = study.run(config, workdir)
      end = time.perf_counter()
  finally:
    py_logging.getLogger("absl").removeHandler(handler)
  marks = handler.stages + [("end", end)]
  stages: dict[str, float] = {}
  for (name, begin), (_, finish) in zip(marks, marks[1:]):
    stages[name] = stages.get(name, 0.0) + finish - begin
  return {"wall_s": end - start, "stages_s": stages, "compiles": compiles.count,
          "compile_s": compiles.seconds,
          "most_compiled": collections.Counter(compiles.names).most_common(8),
          "status": summary.get("status", {}),
          "model_time_s": {name: record.get("time_s") for name, record in
                           summary.get("methods", {}).items()}}


def _print_markdown(results: dict) -> None:
  lines = [f"machine: {json.dumps(results['machine'])}", ""]
  if "cnn" in results:
    cnn = results["cnn"]
    peak = cnn["matmul_peak"]
    lines += [f"CNN train step, batch {cnn['batch']} (XLA: {cnn['xla_flops'] / 1e9:.2f} GFLOP/step;"
              f" textbook {cnn['textbook_flops'] / 1e9:.2f}); matmul peak "
              f"{peak['peak_gflops']:.0f} GFLOP/s (median {peak['median_gflops']:.0f})", "",
              "| side | ms/step (median) | min–max ms | examples/s | GFLOP/s | of peak | vs torch |",
              "|---|---|---|---|---|---|---|"]
    for name, t in cnn["times"].items():
      ratio = cnn.get("speedup_vs_torch", {}).get(name)
      spread = f"{1000 * t['min'] / cnn['steps_per_unit']:.0f}–" \
               f"{1000 * t['max'] / cnn['steps_per_unit']:.0f}"
      lines.append(f"| {name} | {t['step_ms']:.1f} | {spread} | {t['examples_per_s']:.0f} | "
                   f"{t['gflops']:.1f} | {100 * t['fraction_of_peak']:.0f}% | "
                   f"{'' if ratio is None else f'{ratio:.2f}x'} |")
    lines.append("")
  if "pergrad" in results:
    pergrad = results["pergrad"]
    lines += [f"Per-example gradients of the CNN, {pergrad['examples']} examples", "",
              "| side | ms (median) | examples/s |", "|---|---|---|"]
    lines += [f"| {name} | {1000 * t['median']:.1f} | {t['examples_per_s']:.0f} |"
              for name, t in pergrad["times"].items()]
    if "speedup_vs_torch" in pergrad:
      lines.append(f"\nJAX / torch.func speed: {pergrad['speedup_vs_torch']:.2f}x")
    lines.append("")
  if "ensemble" in results:
    lines += ["| ensemble | models x steps | vmapped s | loop s | loop / vmapped |",
              "|---|---|---|---|---|"]
    for name, e in results["ensemble"].items():
      lines.append(f"| {name} | {e['members']} x {e['steps']} | {e['vmapped']['median']:.2f} | "
                   f"{e['loop']['median']:.2f} | {e['loop_over_vmapped']:.2f}x |")
    lines.append("")
  if "study" in results:
    study_result = results["study"]
    lines += [f"sed_mnist:runlocal study: {study_result['wall_s']:.1f} s wall, "
              f"{study_result['compiles']} compilations ({study_result['compile_s']:.1f} s)", "",
              "| stage | s |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in
              study_result["stages_s"].items()]
    lines.append("\nmost compiled: " + ", ".join(f"{name} x{count}" for name, count in
                                                  study_result["most_compiled"]))
  print("\n".join(lines), flush=True)


BENCHMARKS = {"cnn": bench_cnn, "pergrad": bench_pergrad, "ensemble": bench_ensemble,
              "study": bench_study}


def main(argv):
  del argv
  unknown = [name for name in _ONLY.value if name not in BENCHMARKS]
  if unknown:  # before minutes of the others
    raise app.UsageError(f"--only: unknown benchmark {unknown[0]!r} ({', '.join(BENCHMARKS)})")
  tunables = launch_common.with_hugepages(os.environ.get("GLIBC_TUNABLES"))
  if _HUGEPAGES.value == "auto" and sys.platform.startswith("linux") and tunables:
    os.environ["GLIBC_TUNABLES"] = tunables
    os.execv(sys.executable, [sys.executable, "-m", "benchmarks.run", *sys.argv[1:]])
  results = {"command": " ".join(["python -m benchmarks.run", *sys.argv[1:]]),
             "machine": timing.machine()}
  for name in _ONLY.value:
    logging.info("benchmark %s", name)
    results[name] = BENCHMARKS[name]()
  results["machine_after"] = {"load_average": timing.load_average()}
  _print_markdown(results)
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(results, f, indent=2, default=float)


if __name__ == "__main__":
  app.run(main)
