#!/usr/bin/env python3
"""Build the ONNX-import fixtures: the narrow ResNet-18 and MobileNet-V2 of
tests/fixtures/graph/ (same weights.pth), exported with torch.onnx.export, so the graph
fixtures' PyTorch logits and zennit relevance (tests/fixtures/graph/ARCH/expected.safetensors)
are the references of the imported models too.

  resnet18      exported with BatchNormalization nodes kept (TrainingMode.PRESERVE on an
                eval-mode model): the importer folds them into the convs.
  mobilenet_v2  exported as torch does by default in eval mode: batch-norm already fused
                into the convs, ReLU6 as Clip(0, 6).

Both use opset 13, a dynamic batch axis, and the legacy TorchScript exporter (dynamo=False),
whose graphs are what most ONNX files in the wild look like.

Outputs, in tests/fixtures/onnx/ (or OUT_DIR): ARCH.onnx. Needs torch, torchvision, onnx
(the same venv as scripts/graph_fixtures.py).

  python3 scripts/onnx_fixtures.py [OUT_DIR]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import graph_fixtures as gf  # noqa: E402  (the narrow models, built exactly as there)

HERE = os.path.dirname(os.path.abspath(__file__))
GRAPH = os.path.join(HERE, "..", "tests", "fixtures", "graph")


def main():
    import torch

    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "tests", "fixtures", "onnx")
    out = os.path.normpath(out)
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    builds = {
        "resnet18": (gf.narrow_resnet18, torch.onnx.TrainingMode.PRESERVE),
        "mobilenet_v2": (gf.narrow_mobilenet_v2, torch.onnx.TrainingMode.EVAL),
    }
    for arch, (build, training) in builds.items():
        model = build().eval()
        state = torch.load(os.path.join(GRAPH, arch, "weights.pth"))
        model.load_state_dict(state, strict=False)
        from safetensors.torch import load_file

        images = load_file(os.path.join(GRAPH, arch, "inputs.safetensors"))["images"]
        expected = load_file(os.path.join(GRAPH, arch, "expected.safetensors"))["logits"]
        with torch.no_grad():
            got = model(images)
        gap = (got - expected).abs().max().item()
        assert gap < 1e-5, f"{arch}: the rebuilt model is not the graph fixture ({gap})"
        path = os.path.join(out, f"{arch}.onnx")
        torch.onnx.export(
            model,
            (images,),
            path,
            opset_version=13,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
            training=training,
            do_constant_folding=True,
            dynamo=False,
        )
        import onnx

        ops = sorted({n.op_type for n in onnx.load(path).graph.node})
        print(f"{arch}: {path} ({os.path.getsize(path)} bytes), ops {ops}")


if __name__ == "__main__":
    main()
