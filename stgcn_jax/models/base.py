"""What every backbone shares: the skeleton and block-list fields, graph lookup, and the recognizer."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stgcn_jax import graph as graph_lib
from stgcn_jax.errors import UserError
from stgcn_jax.models import layers


@functools.lru_cache(maxsize=64)
def adjacency(layout: graph_lib.Layout, mode: str, **kwargs) -> np.ndarray:
  """Cached ``graph.adjacency`` (layouts are hashable); callers must not modify the result."""
  a = graph_lib.adjacency(layout, mode, **kwargs)
  a.setflags(write=False)
  return a


class Backbone(nn.Module):
  """Fields common to the four backbones (pyskl's constructor arguments of the same names).

  Input ``x_NMTVC``; output features ``(N, M, T', V, C')`` (``T' = T/4``, ``C' = 256`` by default).
  """
  layout: graph_lib.Layout = graph_lib.LAYOUTS["nturgb+d"]
  in_channels: int = 3
  base_channels: int = 64
  ch_ratio: float = 2
  num_stages: int = 10
  inflate_stages: tuple[int, ...] = (5, 8)
  down_stages: tuple[int, ...] = (5, 8)
  num_person: int = 2
  temporal_conv: str = "custom_vjp"   # how (k x 1) convs are differentiated (layers.Conv.impl)

  graph_mode: str = "spatial"
  data_bn_type: str | None = "VC"
  # The options of the block's units, a frozen dataclass each (the backbone module's
  # ``GCNOptions`` / ``TCNOptions``); every ``tcn`` has a ``dropout``.
  gcn: Any = None
  tcn: Any = layers.TCNOptions()

  # How pyskl names this backbone's blocks in a state_dict (``stgcn_jax.models.pyskl``): the block
  # list (``backbone.gcn.3``) and the renamed units of a block (CTR-GCN: ``net.3.gcn1``).
  pyskl_blocks: ClassVar[str] = "gcn"
  pyskl_units: ClassVar[dict[str, str]] = {}
  # pyskl keywords of this backbone that are not spelt ``gcn_*`` / ``tcn_*``, and the option each
  # one sets (CTR-GCN: ``kernel_size`` -> ``tcn_kernel_size``; read by ``models.resolve_options``).
  pyskl_names: ClassVar[dict[str, str]] = {}

  def pyskl_fixed_buffers(self) -> dict[str, np.ndarray]:
    """Graph buffers pyskl saves that this backbone computes itself, with the values it uses
    (``convert`` checks them instead of loading them)."""
    return {}

  def graph(self) -> np.ndarray:
    """The ``(K, V, V)`` adjacency stack the GCN units start from."""
    return adjacency(self.layout, self.graph_mode)

  def units(self, cout: int, stride: int, dropout: float, a: np.ndarray):
    """``(gcn, tcn)`` module constructors of one block (see ``layers.Block``)."""
    raise NotImplementedError

  @nn.compact
  def __call__(self, x_NMTVC: jax.Array, train: bool = False) -> jax.Array:
    a = self.graph()

    def block(i, cout, stride, res_kind, dropout):
      gcn, tcn = self.units(cout, stride, dropout, a)
      return layers.Block(gcn, tcn, cout, stride, res_kind, name=f"block{i}")

    return self.run_blocks(x_NMTVC, train, self.data_bn_type, block)

  def specs(self):
    return layers.block_specs(self.in_channels, self.base_channels, self.ch_ratio,
                              self.num_stages, self.inflate_stages, self.down_stages)

  def run_blocks(self, x_NMTVC: jax.Array, train: bool, data_bn_type: str | None,
                 make_block) -> jax.Array:
    """Data BN, then ``make_block(i, cout, stride, residual, dropout)(x, train)`` for every block.

    ``dropout`` is ``tcn.dropout``, except 0 for block 0 (pyskl never drops out in the first block).

    Call from the subclass's compact ``__call__``; returns features ``(N, M, T', V, C')``.
    """
    self.check_input(x_NMTVC)
    n, m = x_NMTVC.shape[:2]
    x = layers.data_bn(x_NMTVC, data_bn_type, train)
    for i, (_, cout, stride, res_kind) in enumerate(self.specs()):
      dropout = 0.0 if i == 0 else self.tcn.dropout
      x = make_block(i, cout, stride, res_kind, dropout)(x, train)
    return x.reshape((n, m) + x.shape[1:])

  def check_input(self, x_NMTVC: jax.Array) -> None:
    if x_NMTVC.ndim != 5:
      raise UserError(f"{type(self).__name__}: expected input (N, M, T, V, C), got shape "
                      f"{x_NMTVC.shape}")
    _, m, _, v, c = x_NMTVC.shape
    if v != self.layout.num_joints or c != self.in_channels:
      raise UserError(
          f"{type(self).__name__}: input has V={v} joints and C={c} channels, but the model was "
          f"built for layout {self.layout.name!r} (V={self.layout.num_joints}) and "
          f"in_channels={self.in_channels}")
    if getattr(self, "data_bn_type", None) == "MVC" and m != self.num_person:
      raise UserError(f"{type(self).__name__}: data_bn_type='MVC' needs M={self.num_person} "
                      f"persons, got M={m}")


class GCNHead(nn.Module):
  """pyskl ``GCNHead``: mean over (T, V) per person, mean over persons, dropout, ``fc_cls``."""
  num_classes: int
  dropout: float = 0.0
  init_std: float = 0.01

  @nn.compact
  def __call__(self, feat_NMTVC: jax.Array, train: bool) -> jax.Array:
    x = jnp.mean(feat_NMTVC, axis=(1, 2, 3))
    if self.dropout > 0:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(self.init_std),
                    name="fc_cls")(x)


class Recognizer(nn.Module):
  """Backbone + head (pyskl ``RecognizerGCN``).

  ``__call__(x, train)`` takes ``x_NMTVC`` or, for multi-clip testing, ``(N, clips, M, T, V, C)``
  (clips are folded into the batch; the logits come back as ``(N, clips, classes)``). With
  ``return_features=True`` it returns ``(logits, features_NMTVC)``.
  """
  backbone: nn.Module
  num_classes: int
  head_dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, return_features: bool = False) -> Any:
    lead = x.shape[:-4]
    if len(lead) not in (1, 2):
      raise UserError(f"expected input (N, M, T, V, C) or (N, clips, M, T, V, C), got {x.shape}")
    x = x.reshape((-1,) + x.shape[-4:])
    feat = self.backbone(x, train)
    logits = GCNHead(self.num_classes, self.head_dropout, name="cls_head")(feat, train)
    logits = logits.reshape(lead + logits.shape[-1:])
    if return_features:
      return logits, feat.reshape(lead + feat.shape[1:])
    return logits
