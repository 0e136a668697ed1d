"""Joint variants: K generator members that differ in sparsity, mask method, seeds and penalty
weight, trained side by side on the same batches by one step (``ensemble.py`` stacks them).

A spec lists the variants as the product of its axes, ``;`` between axes, ``,`` between values,
``|`` between products whose members are concatenated::

    s=0.8,0.95;lambda=0,1            4 members: (0.8, 0), (0.8, 1), (0.95, 0), (0.95, 1)
    s=0.95;seed=0,1,2                3 seeds of one configuration (error bars)
    mask=uniform,erk|s=0.99;lambda=0

Axes (an axis left out takes the run config's value): ``s`` (or ``sparsity``), ``lambda`` (or
``penalty_lambda``; 0 = no penalty), ``mask`` (or ``mask_method``), ``seed`` (the member's run
seed: its initialisation and mask are those of a separate run with ``--seed``), ``init_seed`` and
``mask_seed`` (one of the two only). The joint ensemble (mode 'ensemble') is the spec
``s=<ensemble_sparsities>``.

>>> members = parse_variants("s=0.8,0.95;lambda=0,1", Variant(0.95, "uniform", 1.0, 0, 0, 0))
>>> member_names(members)        # ['s0.8_lambda0', 's0.8_lambda1', 's0.95_lambda0', ...]
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from stgcn_jax.errors import UserError
from stgcn_jax.sparsity.masks import METHODS, check_sparsity

__all__ = ["Variant", "VariantSpecError", "parse_variants", "member_names", "seed_groups",
           "choose_sparsest", "AXES"]


class VariantSpecError(UserError):
  """A spec that does not parse; the message names the bad token."""


@dataclasses.dataclass(frozen=True)
class Variant:
  """One member: its sparsity, mask method, penalty weight, run seed, and the seeds its
  initialisation and mask are drawn from (``setup.run_seeds`` turns them into keys)."""
  sparsity: float
  mask_method: str
  penalty_lambda: float
  seed: int
  init_seed: int
  mask_seed: int

  @property
  def setting(self) -> tuple:
    """What the member trains, seeds aside: members alike in it give error bars."""
    return (self.sparsity, self.mask_method, self.penalty_lambda)


# The spec's axis names -> the Variant field each sets.
AXES = {"s": "sparsity", "sparsity": "sparsity", "lambda": "penalty_lambda",
        "penalty_lambda": "penalty_lambda", "mask": "mask_method", "mask_method": "mask_method",
        "seed": "seed", "init_seed": "init_seed", "mask_seed": "mask_seed"}
_SHORT = {"sparsity": "s", "penalty_lambda": "lambda", "mask_method": "mask", "seed": "seed",
          "init_seed": "init_seed", "mask_seed": "mask_seed"}


def _value(field: str, token: str, where: str):
  try:
    if field == "mask_method":
      if token not in METHODS:
        raise ValueError(f"not one of {METHODS}")
      return token
    if field == "sparsity":
      return check_sparsity(float(token), "sparsity")
    if field == "penalty_lambda":
      value = float(token)
      if not value >= 0 or math.isinf(value):
        raise ValueError("must be a number >= 0")
      return value
    if not token.lstrip("-").isdigit():
      raise ValueError("must be an integer")
    return int(token)
  except ValueError as err:
    raise VariantSpecError(f"{where}: bad value {token!r} for {field} ({err})") from None


def _product(text: str, base: Variant) -> list[Variant]:
  axes: dict[str, list] = {}
  for part in text.split(";"):
    where = f"variants {part.strip()!r}"
    name, eq, values = part.partition("=")
    name = name.strip()
    if not eq or not name:
      raise VariantSpecError(f"{where}: expected AXIS=V1,V2,... with AXIS one of "
                             f"{sorted(set(AXES))}")
    if name not in AXES:
      raise VariantSpecError(f"{where}: unknown axis {name!r}; expected one of {sorted(AXES)}")
    field = AXES[name]
    if field in axes:
      raise VariantSpecError(f"{where}: axis {name!r} appears twice")
    tokens = [t.strip() for t in values.split(",")]
    if any(not t for t in tokens):
      raise VariantSpecError(f"{where}: an empty value in {values!r}")
    axes[field] = [_value(field, t, where) for t in tokens]
  if "seed" in axes and ({"init_seed", "mask_seed"} & set(axes)):
    raise VariantSpecError(f"variants {text!r}: 'seed' sets init_seed and mask_seed; give one or "
                           "the other two")
  out = []
  for combo in itertools.product(*axes.values()):
    changes = dict(zip(axes, combo))
    if "seed" in changes:
      changes.update(init_seed=changes["seed"], mask_seed=changes["seed"])
    out.append(dataclasses.replace(base, **changes))
  return out


def parse_variants(spec: str, base: Variant) -> tuple[Variant, ...]:
  """The members of ``spec`` (module docstring), each axis not in it taken from ``base``.

  Raises:
    VariantSpecError: an empty spec, an unknown axis, a bad value, or two equal members.
  """
  if not spec or not spec.strip():
    raise VariantSpecError("variants: empty spec; expected e.g. 's=0.8,0.95;lambda=0,1'")
  members = [v for product in spec.split("|") for v in _product(product.strip(), base)]
  seen = set()
  for v in members:
    if v in seen:
      raise VariantSpecError(f"variants {spec!r}: the member {member_label(v)} is listed twice")
    seen.add(v)
  return tuple(members)


def member_label(v: Variant, fields=("sparsity", "penalty_lambda", "mask_method", "init_seed",
                                     "mask_seed")) -> str:
  def text(field):
    value = getattr(v, field)
    return f"{value:g}" if isinstance(value, float) else str(value)
  if "init_seed" in fields and "mask_seed" in fields and v.init_seed == v.mask_seed:
    fields = [f for f in fields if f not in ("init_seed", "mask_seed")] + ["seed"]
  return "_".join(f"{_SHORT[f]}{text('init_seed' if f == 'seed' else f)}" for f in fields)


def member_names(members) -> list[str]:
  """One directory-safe name per member: its sparsity and every field that varies between the
  members (``s0.6`` ... for a multi-level ensemble, ``s0.8_lambda0`` ...)."""
  fields = [f for f in ("sparsity", "penalty_lambda", "mask_method", "init_seed", "mask_seed")
            if f == "sparsity" or len({getattr(v, f) for v in members}) > 1]
  return [member_label(v, tuple(fields)) for v in members]


def seed_groups(members: list[dict], keys=("top1", "val_top1")) -> list[dict]:
  """Error bars: per setting (sparsity, mask method, lambda) with more than one member, the mean
  and (sample) standard deviation of each of ``keys`` over its seeds. ``members``: the results
  rows (``sparsity``, ``mask_method``, ``penalty_lambda``, ``init_seed``, ``mask_seed``,
  ``name`` and the keys)."""
  groups: dict[tuple, list[dict]] = {}
  for m in members:
    groups.setdefault((m["sparsity"], m["mask_method"], m["penalty_lambda"]), []).append(m)
  out = []
  for (s, method, lam), rows in groups.items():
    if len(rows) < 2:
      continue
    seeds = [r["init_seed"] if r["init_seed"] == r["mask_seed"] else [r["init_seed"],
                                                                     r["mask_seed"]]
             for r in rows]
    entry = {"sparsity": s, "mask_method": method, "penalty_lambda": lam, "seeds": seeds,
             "members": [r["name"] for r in rows]}
    for key in keys:
      values = [r[key] for r in rows if r.get(key) is not None]
      if values:
        entry[f"{key}_mean"] = float(np.mean(values))
        entry[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    out.append(entry)
  return out


def choose_sparsest(members: list[dict], tolerance: float) -> dict:
  """The sparsest member whose validation top-1 is within ``tolerance`` points (percent) of the
  best member's (ties: the better validation top-1, then the earlier member); the record says why.
  ``members``: results rows with ``name``, ``sparsity`` and ``val_top1`` (a fraction)."""
  best = max(m["val_top1"] for m in members)
  floor = best - tolerance / 100.0
  eligible = [i for i, m in enumerate(members) if m["val_top1"] >= floor - 1e-12]
  chosen = max(eligible, key=lambda i: (members[i]["sparsity"], members[i]["val_top1"], -i))
  pick = members[chosen]
  best_names = [m["name"] for m in members if m["val_top1"] == best]
  sparser = [m["name"] for m in members if m["sparsity"] > pick["sparsity"]]
  reason = (f"best validation top-1 {100 * best:.1f}% ({', '.join(best_names)}); within "
            f"{tolerance:g} points of it (>= {100 * floor:.1f}%): "
            f"{', '.join(members[i]['name'] for i in eligible)}; the sparsest of them is "
            f"{pick['name']} ({100 * pick['val_top1']:.1f}%)")
  if sparser:
    reason += f"; sparser members fell below: {', '.join(sparser)}"
  return {"chosen": pick["name"], "index": chosen, "sparsity": pick["sparsity"],
          "tolerance_points": tolerance, "best_val_top1": best, "val_top1_floor": floor,
          "reason": reason, "selected_by": "validation top-1 (the test split is not used)"}


def run_variants(sp, seed: int) -> tuple[Variant, ...] | None:
  """The members of a stacked run's ``SparsityConfig`` ``sp`` under the run seed: one per level of
  ``ensemble_sparsities`` (mode 'ensemble'), the spec ``sp.variants`` (mode 'variants'), else
  ``None`` (one model). Axes a spec leaves out take ``sp``'s values and the run seed."""
  base = Variant(float(sp.level), sp.mask_method, float(sp.penalty_lambda), int(seed),
                 int(seed), int(seed))
  if sp.mode == "ensemble":
    return tuple(dataclasses.replace(base, sparsity=float(s)) for s in sp.ensemble_sparsities)
  if sp.mode == "variants":
    return parse_variants(sp.variants, base)
  return None
