"""The PyTorch side of the benchmarks: the same CNN, SGD step and per-example gradients.

`TorchCNN` is `unlearn_jax.models.cnn.CNN` layer for layer (3x3 'same' convs, ReLU, 2x2 max
pool, dense, dense; flattened in NHWC order so a Flax parameter tree loads unchanged), trained
with `torch.optim.SGD(momentum, weight_decay)`, which is the update of the project's
`make_optimizer('sgd', ...)` (optax: decayed weights added to the gradient, then heavy-ball
momentum). Inputs are uint8 images scaled to [0, 1] inside the step, as the JAX step does.
PyTorch runs eagerly (no torch.compile), with its default intra-op threads.

Needs the optional extra `bench` (`pip install -e '.[bench]'`, torch==2.13.0 CPU build).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn


class TorchCNN(nn.Module):
  """(conv 3x3 'same' + ReLU + 2x2 max pool) per feature count, then dense + ReLU, dense."""

  def __init__(self, num_classes: int, image_shape: Sequence[int],
               features: Sequence[int] = (32, 64), dense: int = 128):
    super().__init__()
    height, width, channels = image_shape
    self.convs = nn.ModuleList()
    for out in features:
      self.convs.append(nn.Conv2d(channels, out, 3, padding=1))
      height, width, channels = height // 2, width // 2, out
    self.hidden = nn.Linear(height * width * channels, dense)
    self.logits = nn.Linear(dense, num_classes)

  def forward(self, images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC images -> logits."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    for conv in self.convs:
      x = nn.functional.max_pool2d(torch.relu(conv(x)), 2)
    x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # NHWC order, as Flax flattens
    return self.logits(torch.relu(self.hidden(x)))


def load_flax_params(model: TorchCNN, params: dict[str, Any]) -> None:
  """Copies a Flax CNN parameter tree (Conv_i, Dense_0, Dense_1) into `model`."""
  with torch.no_grad():
    for index, conv in enumerate(model.convs):
      layer = params[f"Conv_{index}"]
      conv.weight.copy_(torch.from_numpy(np.array(layer["kernel"])).permute(3, 2, 0, 1))
      conv.bias.copy_(torch.from_numpy(np.array(layer["bias"])))
    for name, linear in (("Dense_0", model.hidden), ("Dense_1", model.logits)):
      linear.weight.copy_(torch.from_numpy(np.array(params[name]["kernel"])).T)
      linear.bias.copy_(torch.from_numpy(np.array(params[name]["bias"])))


def flax_like_params(model: TorchCNN) -> dict[str, dict[str, np.ndarray]]:
  """The model's parameters as a Flax-shaped tree of numpy arrays (for comparisons)."""
  tree = {}
  for index, conv in enumerate(model.convs):
    tree[f"Conv_{index}"] = {"kernel": conv.weight.detach().permute(2, 3, 1, 0).numpy(),
                             "bias": conv.bias.detach().numpy()}
  for name, linear in (("Dense_0", model.hidden), ("Dense_1", model.logits)):
    tree[name] = {"kernel": linear.weight.detach().T.numpy(), "bias": linear.bias.detach().numpy()}
  return tree


def make_train_step(model: TorchCNN, lr: float, momentum: float = 0.9,
                    weight_decay: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], float]:
  """An eager SGD step `step(images, labels) -> loss` (mean cross-entropy)."""
  optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                              weight_decay=weight_decay)

  def step(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss

  return step


def make_per_example_grads(model: TorchCNN) -> Callable[[torch.Tensor, torch.Tensor], dict]:
  """`grads(images, labels)`: each example's loss gradient, `torch.func.vmap(grad(...))`."""
  from torch.func import functional_call, grad, vmap  # pylint: disable=g-import-not-at-top
  params = {name: value.detach() for name, value in model.named_parameters()}

  def loss(parameters, image, label):
    logits = functional_call(model, parameters, (image[None],))
    return nn.functional.cross_entropy(logits, label[None])

  per_example = vmap(grad(loss), in_dims=(None, 0, 0))
  return lambda images, labels: per_example(params, images, labels)
