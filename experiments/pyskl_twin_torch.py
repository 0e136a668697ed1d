"""The torch side of ``experiments.pyskl_twin``: pyskl's own model trained on a recorded stream.

  TORCH_PYTHON experiments/pyskl_twin_torch.py --stream=DIR --pyskl_src=PATH --out=DIR [--threads=1]

``experiments.pyskl_twin`` writes ``DIR`` (``meta.json``, ``train_x.npy`` / ``train_y.npy``: every
training batch of an ``experiments.run`` command in order, ``test_x.npy`` / ``test_y.npy``: the test
clips) with the project's data pipeline and starts this file under a python that has torch. Like
``bench_pyskl`` (whose model builder it uses) it reads only the standard library, numpy, torch and
pyskl's source. It trains pyskl's backbone with ``GCNHead``'s classifier on the batches in their
order, with the learning rate the run's schedule gives each step (``meta.json: lrs``) and torch's
SGD with the run's momentum, Nesterov flag and weight decay (on every parameter, as pyskl's
configs), then tests the final model in eval mode (softmax averaged over clips, as pyskl's test).

``--out`` gets ``metrics.jsonl`` (one line an epoch), ``checkpoint.pt`` after every epoch (a stopped
run started again resumes from it) and ``results.json`` at the end; every file is written under a
temporary name and renamed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import bench_pyskl  # pylint: disable=import-error  # the sibling file (sys.path[0] is this folder)


def _write_atomic(path: Path, write) -> None:
  tmp = path.with_name(path.name + ".tmp")
  write(tmp)
  os.replace(tmp, path)


def _scores(model, x: np.ndarray, batch: int):
  """Softmax scores (N, classes) averaged over the clips of ``x`` (N, clips, M, T, V, C)."""
  import torch  # pylint: disable=import-outside-toplevel
  out = []
  model.eval()
  with torch.inference_mode():
    for start in range(0, len(x), batch):
      chunk = torch.from_numpy(np.array(x[start:start + batch]))
      n, clips = chunk.shape[:2]
      probs = model(chunk.reshape(n * clips, *chunk.shape[2:])).softmax(-1)
      out.append(probs.reshape(n, clips, -1).mean(1).numpy())
  return np.concatenate(out)


def _report(scores: np.ndarray, labels: np.ndarray) -> dict:
  top5 = np.argsort(-scores, axis=1)[:, :5]
  pred = top5[:, 0]
  classes = np.unique(labels)
  return {"top1": float(np.mean(pred == labels)),
          "top5": float(np.mean((top5 == labels[:, None]).any(1))),
          "mean_class_accuracy": float(np.mean([np.mean(pred[labels == c] == c) for c in classes])),
          "num_samples": int(len(labels))}


def train(args: argparse.Namespace) -> dict:
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
  stream, out = Path(args.stream), Path(args.out)
  meta = json.loads((stream / "meta.json").read_text())
  out.mkdir(parents=True, exist_ok=True)
  torch.manual_seed(meta["torch_seed"])
  torch.set_flush_denormal(True)
  bench_pyskl.pin_threads(args.threads)
  gcns = bench_pyskl.load_pyskl(args.pyskl_src, meta.get("layout_spec"))
  model, _ = bench_pyskl.build_model(gcns, meta["backbone"], meta["num_classes"], meta["layout"],
                                     meta["persons"], meta["frames"], False,
                                     options=meta["model_options"])
  optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=meta["momentum"],
                              nesterov=meta["nesterov"], weight_decay=meta["weight_decay"])
  x = np.load(stream / "train_x.npy", mmap_mode="r")
  y = np.load(stream / "train_y.npy")
  lrs, spe, epochs = meta["lrs"], meta["steps_per_epoch"], meta["num_epochs"]
  if len(x) != spe * epochs or len(lrs) != len(x):
    raise bench_pyskl.UserError(f"{stream}: {len(x)} batches and {len(lrs)} learning rates for "
                                f"{epochs} epochs of {spe} steps (a stream cut short?)")
  ckpt, start_epoch, train_s = out / "checkpoint.pt", 0, 0.0
  if ckpt.is_file():
    saved = torch.load(ckpt, weights_only=True)   # tensors and plain values only: no pickled code
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    start_epoch, train_s = saved["epoch"], saved["train_s"]
    print(f"resumed from {ckpt} at epoch {start_epoch}", flush=True)
  for epoch in range(start_epoch, epochs):
    model.train()
    t0, losses, correct = time.perf_counter(), [], 0
    for step in range(epoch * spe, (epoch + 1) * spe):
      for group in optimizer.param_groups:
        group["lr"] = lrs[step]
      label = torch.from_numpy(y[step].astype(np.int64))
      optimizer.zero_grad(set_to_none=True)
      logits = model(torch.from_numpy(np.array(x[step])))
      loss = F.cross_entropy(logits, label)
      loss.backward()
      optimizer.step()
      losses.append(float(loss.detach()))
      correct += int((logits.detach().argmax(-1) == label).sum())
    train_s += time.perf_counter() - t0
    row = {"epoch": epoch + 1, "step": (epoch + 1) * spe, "loss": float(np.mean(losses)),
           "train_top1": correct / (spe * y.shape[1]), "lr_last": lrs[(epoch + 1) * spe - 1],
           "epoch_s": time.perf_counter() - t0}
    with open(out / "metrics.jsonl", "a") as f:
      f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "epoch": epoch + 1, "train_s": train_s}
    _write_atomic(ckpt, lambda p, s=state: torch.save(s, p))
  test_x = np.load(stream / "test_x.npy", mmap_mode="r")
  test_y = np.load(stream / "test_y.npy")
  results = {**_report(_scores(model, test_x, meta["eval_batch"]), test_y),
             "train_time_s": train_s, "threads": torch.get_num_threads(),
             "torch": torch.__version__, "pyskl_version": bench_pyskl.pyskl_version(args.pyskl_src),
             "num_params": sum(p.numel() for p in model.parameters()),
             "allocator": bench_pyskl.allocator()}
  _write_atomic(out / "results.json", lambda p: p.write_text(json.dumps(results, indent=1)))
  return results


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
  parser.add_argument("--stream", required=True, help="the folder experiments.pyskl_twin wrote")
  parser.add_argument("--pyskl_src", required=True, help="a pyskl source checkout")
  parser.add_argument("--out", required=True, help="where metrics, checkpoint and results go")
  parser.add_argument("--threads", type=int, default=1, help="torch threads (0: its default)")
  args = parser.parse_args(argv)
  try:
    results = train(args)
  except bench_pyskl.UserError as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  print(json.dumps({k: results[k] for k in ("top1", "top5", "mean_class_accuracy")}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
