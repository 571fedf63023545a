#!/usr/bin/env python3
"""Load a pruned network that `lrprune export --rate/--step/--safe` wrote, the way the README
shows, in onnxruntime and in PyTorch (onnx2torch), and check both against model.json.

    python3 scripts/check_export.py pruned/

Checks: onnxruntime's top-1 on test.safetensors equals the step's recorded test top-1; the
PyTorch module's logits equal onnxruntime's (relative 1e-4); the ONNX weights number what
model.safetensors holds, with the pruned shapes. Needs onnxruntime, onnx, onnx2torch,
safetensors and torch (pip).
"""
import json
import sys
from pathlib import Path

import numpy as np


def main(folder: str) -> int:
    d = Path(folder)
    meta = json.loads((d / "model.json").read_text())

    # -- the README's snippet --
    import onnxruntime as ort
    from safetensors.numpy import load_file

    test = load_file(str(d / "test.safetensors"))
    sess = ort.InferenceSession(str(d / "model.onnx"))
    logits = sess.run(["logits"], {"input": test["images"]})[0]
    top1 = float((logits.argmax(1) == test["labels"]).mean())

    import onnx
    import torch
    from onnx2torch import convert

    net = convert(onnx.load(str(d / "model.onnx"))).eval()
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(test["images"])).numpy()
    # -- end of the snippet --

    problems = []
    want = meta["test"]["top1"]
    if abs(top1 - want) > 1e-12:
        problems.append(f"onnxruntime top-1 {top1} != recorded {want}")
    scale = max(1.0, float(np.abs(logits).max()))
    rel = float(np.abs(torch_logits - logits).max()) / scale
    if rel > 1e-4:
        problems.append(f"PyTorch vs onnxruntime logits differ by {rel:.2e} (relative)")
    weights = load_file(str(d / "model.safetensors"))
    model = onnx.load(str(d / "model.onnx"))
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for name, w in weights.items():
        if inits.get(name) != tuple(w.shape):
            problems.append(f"{name}: safetensors {w.shape}, ONNX {inits.get(name)}")
    first = meta["groups"][0]
    print(
        f"{d}: step {meta['step']} (rate {meta['pruning_rate']:.4f}), "
        f"{meta['params']} params, onnxruntime top-1 {top1:.4f} (recorded {want:.4f}), "
        f"PyTorch vs onnxruntime {rel:.1e}, group {first['name']} keeps "
        f"{len(first['kept'])}/{first['channels']}"
    )
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
