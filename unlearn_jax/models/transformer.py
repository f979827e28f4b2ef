"""Decoder-only transformer for the language-model track.

A GPT-style causal language model kept small enough to train from scratch on a laptop: token and
learned position embeddings, `num_layers` pre-LayerNorm blocks (causal multi-head self-attention,
then a GELU MLP, each added to the residual stream), a final LayerNorm and a projection to the
vocabulary (its own Dense, or the transposed token embedding when `tie_embeddings`).

Only a causal mask is applied: sequences are laid out `[bos] question [sep] answer [eos] [pad ...]`
with all padding at the end, so no real position ever attends to a pad, and what is predicted at
a pad position is masked out of every loss. The module follows the image models' call signature,
`__call__(x, train=False)`, so `train.fit` and the checkpoint code use it unchanged; `make`
follows the registry contract with `num_classes` = vocabulary size.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class Block(nn.Module):
  """x + attn(LN(x)), then x + MLP(LN(x)) (the pre-LayerNorm arrangement of GPT-2)."""

  width: int
  heads: int
  mlp_ratio: int
  dropout: float

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, train: bool) -> jnp.ndarray:
    """Maps the (N, L, width) residual stream to a new one; `mask` is (N, 1, L, L)."""
    deterministic = not train
    h = nn.LayerNorm(name="ln_attention")(x)
    h = nn.MultiHeadDotProductAttention(
        num_heads=self.heads, qkv_features=self.width, dropout_rate=self.dropout,
        deterministic=deterministic, name="attention")(h, h, mask=mask)
    x = x + nn.Dropout(self.dropout)(h, deterministic=deterministic)
    h = nn.LayerNorm(name="ln_mlp")(x)
    h = nn.gelu(nn.Dense(self.mlp_ratio * self.width, name="mlp_in")(h))
    h = nn.Dense(self.width, name="mlp_out")(h)
    return x + nn.Dropout(self.dropout)(h, deterministic=deterministic)


class Transformer(nn.Module):
  """Causal language model: int32 tokens (N, L) to float32 next-token logits (N, L, vocab).

  The logit at position j scores the token at position j + 1 given tokens 0..j.
  """

  vocab_size: int
  num_layers: int = 2  # Transformer blocks.
  width: int = 128  # Residual stream (embedding) width, in units.
  heads: int = 4  # Attention heads; must divide width.
  mlp_ratio: int = 4  # MLP hidden width as a multiple of width.
  max_len: int = 64  # Longest sequence (size of the learned position table), in tokens.
  dropout: float = 0.0  # Dropout rate on attention weights and residual branches (train only).
  tie_embeddings: bool = False  # Output layer = transposed token embedding (no own weights).

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Maps int tokens (N, L), L <= max_len, to float32 logits (N, L, vocab_size).

    Raises:
      ValueError: L exceeds `max_len`, or `heads` does not divide `width`.
    """
    if x.ndim != 2:
      raise ValueError(f"Transformer: tokens must be (batch, length), got shape {x.shape}")
    length = x.shape[1]
    if length > self.max_len:
      raise ValueError(f"Transformer: sequence length {length} exceeds max_len={self.max_len}; "
                       "raise model_kwargs.max_len")
    if self.width % self.heads:
      raise ValueError(f"Transformer: heads={self.heads} must divide width={self.width}")
    tokens = x.astype(jnp.int32)
    embed = nn.Embed(self.vocab_size, self.width, name="token_embedding")
    positions = self.param("position_embedding", nn.initializers.normal(stddev=0.02),
                           (self.max_len, self.width))
    h = embed(tokens) + positions[None, :length]
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    mask = nn.make_causal_mask(tokens)
    for index in range(self.num_layers):
      h = Block(self.width, self.heads, self.mlp_ratio, self.dropout,
                name=f"block_{index}")(h, mask, train)
    h = nn.LayerNorm(name="ln_final")(h)
    if self.tie_embeddings:
      logits = embed.attend(h)
    else:
      logits = nn.Dense(self.vocab_size, name="output")(h)
    return logits.astype(jnp.float32)


def make(num_classes: int, num_layers: int = 2, width: int = 128, heads: int = 4,
         mlp_ratio: int = 4, max_len: int = 64, dropout: float = 0.0,
         tie_embeddings: bool = False) -> nn.Module:
  """Builds a `Transformer` over a vocabulary of `num_classes` tokens (see its fields)."""
  return Transformer(vocab_size=int(num_classes), num_layers=int(num_layers), width=int(width),
                     heads=int(heads), mlp_ratio=int(mlp_ratio), max_len=int(max_len),
                     dropout=float(dropout), tie_embeddings=bool(tie_embeddings))
