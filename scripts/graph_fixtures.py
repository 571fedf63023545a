#!/usr/bin/env python3
"""Build the torchvision-graph fixtures: narrow AlexNet / ResNet-18 / ResNet-50 / MobileNetV2 with
fixed random weights, their PyTorch logits and zennit LRP relevance per conv, plus the parameter
and MAC counts of the full-size torchvision models.

The Rust side re-implements these four torchvision architectures (loading torchvision state_dict
key names) and the EpsilonPlus LRP pass over them; these fixtures are what it is checked against.

Models (same module classes, structure and state_dict names as torchvision; narrow channels so
each weights file stays around 1 MB; 10 classes):
  alexnet       torchvision AlexNet with its convs/linears swapped for narrow ones at the same
                indices: features 3-8-24-48-32-32 (11x11/4 p2, 5x5 p2, 3x3 p1 x3), avgpool (6,6),
                classifier 32*36 -> 64 -> 64 -> 10. Input 3x96x96: the last feature map is 2x2, so
                the adaptive pool replicates it to 6x6 (intended: exercises that path).
  resnet18      torchvision ResNet(BasicBlock, [2,2,2,2]) with stem/stage widths 8,16,32,64
                (instead of 64..512). Input 3x64x64.
  resnet50      torchvision ResNet(Bottleneck, [3,4,6,3]), planes 8,16,32,64 (expansion 4, so
                stage outputs 32..256). Input 3x64x64.
  mobilenet_v2  torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=10) unchanged
                (last_channel stays 1280; ~1.05 MB). Input 3x32x32.
Weights: torch.manual_seed(0) before building each model, torchvision's default init, then every
BatchNorm randomised (weight U(0.5,1.5), bias N(0,0.1), running_mean N(0,0.1), running_var
U(0.5,2)) and every conv/linear bias that exists set U(-0.1,0.1). No rescaling was needed: the
logits come out O(0.1)-O(10) (printed per arch and recorded in PROVENANCE.md). eval() everywhere.

Outputs, in tests/fixtures/graph/ (or OUT_DIR):
  ARCH/weights.pth           full state_dict (torchvision key names, num_batches_tracked dropped), f32,
                             saved with torch.save (zip format), as torchvision checkpoints are
  ARCH/inputs.safetensors    images (4,3,H,W) f32 N(0,1), labels (4,) i64 in 0..10
  ARCH/expected.safetensors  logits (4,10) f32 from the plain model;
                             rel.<conv name> (out_channels,) f64 for every Conv2d: the EpsilonPlus
                             relevance at that conv's output *after its BatchNorm is merged into it*
                             (= the gradient zennit's modified backward leaves on the BN's output,
                             or on the conv's own output when no BN follows), summed over batch
                             and space; signed, unnormalised. Output relevance: one-hot on each
                             sample's label. Computed in float64 (weights and images are exact
                             f32 values cast up) so the reference carries no f32 rounding noise;
                             PROVENANCE.md records how far zennit's own f32 run is from it.
  counts.json                params / MACs / conv list of the full-size torchvision alexnet,
                             resnet18, resnet34, resnet50, mobilenet_v2 at 3x224x224, and of the
                             four fixture models at their fixture inputs (keys fixture_ARCH).
  PROVENANCE.md              how this was made, and the exact LRP rule zennit 1.0.0 applies per
                             layer kind (with source references), which the Rust side implements.

Canonizers (zennit.composites.EpsilonPlus with):
  alexnet       SequentialMergeBatchNorm (a no-op: AlexNet has no BN; kept for uniformity)
  resnet*       zennit.torchvision.ResNetCanonizer (merge BN, residual add -> zennit Sum module)
  mobilenet_v2  MobileNetV2Canonizer below: SequentialMergeBatchNorm, plus (a) the residual add of
                InvertedResidual blocks rewritten like zennit's ResNet block canonizer
                (torch.stack + zennit.layer.Sum, so the add gets the Sum rule instead of a plain
                gradient that hands the full relevance to both branches), and (b) torchvision's
                functional adaptive_avg_pool2d replaced by an nn.AdaptiveAvgPool2d((1,1)) module, so
                the AvgPool rule applies (a functional pool would get the plain gradient).
  nn.ReLU6 is in zennit.types.Activation, so EpsilonPlus already gives it Pass(); no extra entry.

Usage (the script makes its own throwaway venv when torch/torchvision/zennit 1.0.0 are missing;
zennit 1.0.0 needs Python >= 3.11.11, so the venv is built from the newest Python found, or from
$LRPRUNE_REF_PYTHON):
  python3 scripts/graph_fixtures.py [OUT_DIR]
"""
import copy
import glob
import json
import os
import shutil
import subprocess
import sys

VENV = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "lrprune", "refvenv")
PKGS = ["torch", "torchvision", "zennit==1.0.0", "safetensors", "numpy"]
MIN_PYTHON = (3, 11, 11)  # zennit 1.0.0's Requires-Python
ZENNIT_VERSION = "1.0.0"  # the rule table in PROVENANCE.md is read from this version's source

N_IMAGES = 4
NUM_CLASSES = 10


# --------------------------------------------------------------------------------------------
# dependencies


def _deps_present():
    try:
        import importlib.metadata
        import numpy, safetensors, torch, torchvision, zennit  # noqa: F401
        return importlib.metadata.version("zennit") == ZENNIT_VERSION
    except ImportError:
        return False


def _python_ok(exe):
    if not exe:
        return False
    check = f"import sys; sys.exit(0 if sys.version_info >= {MIN_PYTHON!r} else 1)"
    try:
        return subprocess.run([exe, "-c", check], capture_output=True).returncode == 0
    except OSError:
        return False


def _venv_base_python():
    candidates = [os.environ.get("LRPRUNE_REF_PYTHON"), sys.executable]
    candidates += [shutil.which(f"python3.{minor}") for minor in range(14, 10, -1)]
    pyenv = glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3"))
    version = lambda path: tuple(int(p) for p in path.split("/")[-3].split(".") if p.isdigit())
    candidates += sorted(pyenv, key=version, reverse=True)
    for exe in candidates:
        if _python_ok(exe):
            return exe
    sys.exit(f"graph_fixtures: zennit {ZENNIT_VERSION} needs Python >= {'.'.join(map(str, MIN_PYTHON))}; "
             "none found (set LRPRUNE_REF_PYTHON)")


def ensure_deps():
    if _deps_present():
        return
    if os.environ.get("LRPRUNE_REFVENV_REEXEC"):
        sys.exit(f"graph_fixtures: dependencies still missing inside {VENV}")
    py = os.path.join(VENV, "bin", "python")
    if os.path.exists(py) and not _python_ok(py):
        shutil.rmtree(VENV)  # throwaway venv built from a Python too old for zennit 1.0.0
    if not os.path.exists(py):
        subprocess.check_call([_venv_base_python(), "-m", "venv", VENV])
    subprocess.check_call([py, "-m", "pip", "install", "-q", *PKGS])
    os.environ["LRPRUNE_REFVENV_REEXEC"] = "1"
    os.execv(py, [py, *sys.argv])


# --------------------------------------------------------------------------------------------
# models (built lazily: torch is only importable after ensure_deps)


def narrow_alexnet():
    import torch.nn as nn
    from torchvision.models import AlexNet

    a, b, c, d, hidden = 8, 24, 48, 32, 64  # torchvision's 64, 192, 384, 256, 256 / 8; 4096 -> 64
    model = AlexNet(num_classes=NUM_CLASSES)
    f, cl = model.features, model.classifier
    f[0] = nn.Conv2d(3, a, kernel_size=11, stride=4, padding=2)
    f[3] = nn.Conv2d(a, b, kernel_size=5, padding=2)
    f[6] = nn.Conv2d(b, c, kernel_size=3, padding=1)
    f[8] = nn.Conv2d(c, d, kernel_size=3, padding=1)
    f[10] = nn.Conv2d(d, d, kernel_size=3, padding=1)
    cl[1] = nn.Linear(d * 6 * 6, hidden)
    cl[4] = nn.Linear(hidden, hidden)
    cl[6] = nn.Linear(hidden, NUM_CLASSES)
    return model


def narrow_resnet(block, layers, width=8):
    """torchvision.models.ResNet with stem/stage widths width*(1,1,2,4,8) instead of 64*(1,1,2,4,8).

    Mirrors ResNet.__init__ (torchvision 0.2x) line by line, only the widths differ; _make_layer,
    forward and the block classes are torchvision's own (zennit's ResNetCanonizer matches the
    BasicBlock / Bottleneck classes)."""
    import torch.nn as nn
    from torchvision.models.resnet import ResNet

    class NarrowResNet(ResNet):
        def __init__(self):
            nn.Module.__init__(self)
            self._norm_layer = nn.BatchNorm2d
            self.inplanes = width
            self.dilation = 1
            self.groups = 1
            self.base_width = 64  # Bottleneck width = planes * base_width / 64 = planes
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(block, width, layers[0])
            self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
            self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
            self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(width * 8 * block.expansion, NUM_CLASSES)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

    return NarrowResNet()


def narrow_resnet18():
    from torchvision.models.resnet import BasicBlock
    return narrow_resnet(BasicBlock, [2, 2, 2, 2])


def narrow_resnet50():
    from torchvision.models.resnet import Bottleneck
    return narrow_resnet(Bottleneck, [3, 4, 6, 3])


def narrow_mobilenet_v2():
    from torchvision.models import mobilenet_v2
    return mobilenet_v2(width_mult=0.25, num_classes=NUM_CLASSES)


# --------------------------------------------------------------------------------------------
# canonizers


def mobilenet_v2_canonizer():
    """SequentialMergeBatchNorm + InvertedResidual add -> zennit Sum + functional pool -> module."""
    import torch
    from torchvision.models.mobilenetv2 import InvertedResidual, MobileNetV2
    from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, SequentialMergeBatchNorm
    from zennit.layer import Sum

    def residual_forward(self, x):
        # torchvision: `return x + self.conv(x)`; same stacking order as zennit's ResNet blocks.
        return self.canonizer_sum(torch.stack([x, self.conv(x)], dim=-1))

    def residual_attributes(_name, module):
        if isinstance(module, InvertedResidual) and module.use_res_connect:
            return {"forward": residual_forward.__get__(module), "canonizer_sum": Sum()}
        return None

    def pooled_forward(self, x):
        # torchvision: nn.functional.adaptive_avg_pool2d(x, (1, 1)); the rest unchanged.
        x = self.canonizer_avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))

    def pool_attributes(_name, module):
        if isinstance(module, MobileNetV2):
            return {"forward": pooled_forward.__get__(module), "canonizer_avgpool": torch.nn.AdaptiveAvgPool2d((1, 1))}
        return None

    return CompositeCanonizer([
        SequentialMergeBatchNorm(),
        AttributeCanonizer(residual_attributes),
        AttributeCanonizer(pool_attributes),
    ])


def sequential_merge():
    from zennit.canonizers import SequentialMergeBatchNorm
    return SequentialMergeBatchNorm()


def resnet_canonizer():
    from zennit.torchvision import ResNetCanonizer
    return ResNetCanonizer()


# name -> (builder, input CHW, canonizer factory, canonizer description)
FIXTURES = {
    "alexnet": (narrow_alexnet, (3, 96, 96), sequential_merge, "zennit.canonizers.SequentialMergeBatchNorm"),
    "resnet18": (narrow_resnet18, (3, 64, 64), resnet_canonizer, "zennit.torchvision.ResNetCanonizer"),
    "resnet50": (narrow_resnet50, (3, 64, 64), resnet_canonizer, "zennit.torchvision.ResNetCanonizer"),
    "mobilenet_v2": (narrow_mobilenet_v2, (3, 32, 32), mobilenet_v2_canonizer,
                     "MobileNetV2Canonizer (this script: SequentialMergeBatchNorm + InvertedResidual Sum "
                     "+ pooling module)"),
}
FULL_SIZE = ["alexnet", "resnet18", "resnet34", "resnet50", "mobilenet_v2"]
FULL_SIZE_WEIGHTS = {
    "alexnet": "AlexNet_Weights", "resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights", "mobilenet_v2": "MobileNet_V2_Weights",
}


# --------------------------------------------------------------------------------------------
# weights, relevance, counts


def randomise(model):
    """BN statistics/affine and existing conv/linear biases -> random (see module docstring)."""
    import torch
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
            elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
                m.bias.uniform_(-0.1, 0.1)


def state_tensors(model):
    return {k: v.detach().float().contiguous() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def conv_output_modules(model):
    """conv name -> (name, module) whose forward output is the conv's output with its BN merged.

    Same adjacency rule as zennit's SequentialMergeBatchNorm: a BatchNorm that is the next leaf
    module (children in registration order) after a conv is merged into it."""
    import torch
    leaves = [(n, m) for n, m in model.named_modules() if next(m.children(), None) is None]
    targets = {}
    for i, (name, module) in enumerate(leaves):
        if isinstance(module, torch.nn.Conv2d):
            nxt = leaves[i + 1] if i + 1 < len(leaves) else (None, None)
            targets[name] = nxt if isinstance(nxt[1], torch.nn.BatchNorm2d) else (name, module)
    return targets


def conv_relevance(model, images, labels, make_canonizer, dtype):
    """EpsilonPlus relevance at every conv's (BN-merged) output, summed over batch and space."""
    import torch
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlus

    model = copy.deepcopy(model).to(dtype).eval()  # canonizers/hooks touch the module: keep the original clean
    kept, handles = {}, []
    for conv_name, (_, target) in conv_output_modules(model).items():
        # Registered before zennit's own hooks, so this sees the module's raw output; zennit then
        # wraps it in an identity node whose backward passes the relevance through unchanged.
        def keep(_module, _inputs, output, conv_name=conv_name):
            output.retain_grad()
            kept[conv_name] = output
        handles.append(target.register_forward_hook(keep))
    one_hot = torch.eye(NUM_CLASSES, dtype=dtype)[labels]
    with Gradient(model=model, composite=EpsilonPlus(canonizers=[make_canonizer()])) as attributor:
        attributor(images.detach().to(dtype).requires_grad_(), one_hot)
    for h in handles:
        h.remove()
    return {name: out.grad.sum(dim=(0, 2, 3)).double() for name, out in kept.items()}


def count(model, input_chw):
    """params, MACs (conv + linear only, per image), and the conv list, via forward hooks."""
    import torch
    convs, conv_out_hw, macs = {}, {}, {"conv": 0, "linear": 0}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            def conv_hook(m, _inputs, out, name=name):
                assert name not in convs, f"{name} called twice"
                kh, kw = m.kernel_size
                assert m.stride[0] == m.stride[1] and m.padding[0] == m.padding[1], name
                macs["conv"] += out[0].numel() * (m.in_channels // m.groups) * kh * kw
                convs[name] = [name, m.out_channels, m.in_channels, m.groups, kh, kw, m.stride[0], m.padding[0]]
                conv_out_hw[name] = list(out.shape[2:])
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            def linear_hook(m, _inputs, _out):
                macs["linear"] += m.in_features * m.out_features
            handles.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_chw))
    for h in handles:
        h.remove()
    order = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return {
        "input": list(input_chw),
        "params": sum(p.numel() for p in model.parameters()),
        "macs": macs["conv"] + macs["linear"],
        "conv_macs": macs["conv"],
        "linear_macs": macs["linear"],
        "convs": [convs[n] for n in order],
        "conv_out_hw": [conv_out_hw[n] for n in order],
    }


def to_json(obj, indent=""):
    """JSON with one line per conv row (flat lists stay on one line)."""
    inner = indent + "  "
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {to_json(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(obj, list) and any(isinstance(v, (list, dict)) for v in obj):
        return "[\n" + ",\n".join(inner + to_json(v, inner) for v in obj) + "\n" + indent + "]"
    return json.dumps(obj)


def check_zennit_rules():
    """Fail loudly if the installed zennit's EpsilonPlus differs from what PROVENANCE.md describes."""
    import torch
    from zennit.composites import EpsilonPlus
    from zennit.layer import Sum
    from zennit.types import Activation, AvgPool, BatchNorm, Convolution, MaxPool

    got = [(types, type(hook).__name__) for types, hook in EpsilonPlus().layer_map]
    want = [(Activation, "Pass"), (Sum, "Norm"), (AvgPool, "Norm"), (BatchNorm, "Pass"),
            (Convolution, "ZPlus"), (torch.nn.Linear, "Epsilon")]
    assert got == want, got
    for module in (torch.nn.ReLU(), torch.nn.ReLU6()):
        assert isinstance(module, Activation), module
    assert isinstance(torch.nn.AdaptiveAvgPool2d((1, 1)), AvgPool)
    assert isinstance(torch.nn.MaxPool2d(3, 2), MaxPool)
    assert not any(isinstance(torch.nn.MaxPool2d(3, 2), types) for types, _ in EpsilonPlus().layer_map)


# --------------------------------------------------------------------------------------------


def main():
    ensure_deps()
    import importlib.metadata
    import torch
    import torchvision
    from safetensors.torch import load_file, save_file

    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "graph")
    out = os.path.normpath(out)
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)  # bit-stable logits across runs
    check_zennit_rules()

    counts, notes = {}, {}
    for arch, (build, input_chw, make_canonizer, _) in FIXTURES.items():
        torch.manual_seed(0)
        model = build().eval()
        randomise(model)
        images = torch.randn(N_IMAGES, *input_chw)
        labels = torch.randint(0, NUM_CLASSES, (N_IMAGES,))
        with torch.no_grad():
            logits = model(images)

        rel = conv_relevance(model, images, labels, make_canonizer, torch.float64)
        rel32 = conv_relevance(model, images, labels, make_canonizer, torch.float32)
        scale = max(v.abs().max().item() for v in rel.values())
        f32_gap = max((rel[k] - rel32[k]).abs().max().item() for k in rel) / scale

        d = os.path.join(out, arch)
        os.makedirs(d, exist_ok=True)
        paths = {k: os.path.join(d, f"{k}.safetensors") for k in ("inputs", "expected")}
        # torchvision's own checkpoint format (torch.save, zip), what a user brings.
        paths["weights"] = os.path.join(d, "weights.pth")
        torch.save(state_tensors(model), paths["weights"])
        save_file({"images": images.contiguous(), "labels": labels.long().contiguous()}, paths["inputs"])
        expected = {"logits": logits.contiguous()}
        expected.update({f"rel.{k}": v.contiguous() for k, v in rel.items()})
        save_file(expected, paths["expected"])

        # Sanity: a fresh model loaded from the file reproduces the logits exactly.
        torch.manual_seed(1)
        fresh = build().eval()
        missing, unexpected = fresh.load_state_dict(torch.load(paths["weights"]), strict=False)
        assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
        with torch.no_grad():
            diff = (fresh(load_file(paths["inputs"])["images"]) - logits).abs().max().item()
        assert diff == 0.0, f"{arch}: reloaded logits differ by {diff}"

        sizes = {k: os.path.getsize(p) for k, p in paths.items()}
        assert sizes["weights"] < 2 * 1024 * 1024, sizes
        counts[f"fixture_{arch}"] = count(model, input_chw)
        notes[arch] = {
            "logit_absmax": logits.abs().max().item(), "logit_std": logits.std().item(),
            "convs": len(rel), "rel_absmax": scale, "f32_gap": f32_gap, "sizes": sizes,
            "params": counts[f"fixture_{arch}"]["params"],
        }
        print(f"{arch:13s} logits |max| {notes[arch]['logit_absmax']:.3g} std {notes[arch]['logit_std']:.3g}; "
              f"{len(rel)} convs, |rel| max {scale:.3g}, f32-vs-f64 gap {f32_gap:.1e} (of max); "
              f"sizes {sizes}; reload diff {diff}")

    for name in FULL_SIZE:
        model = getattr(torchvision.models, name)()  # architecture only, no weights download
        c = count(model, (3, 224, 224))
        meta = getattr(torchvision.models, FULL_SIZE_WEIGHTS[name]).DEFAULT.meta
        c["torchvision_num_params"] = meta["num_params"]
        c["torchvision_gmacs"] = meta["_ops"]  # torchvision calls these GFLOPS but counts MACs
        counts[name] = c
        print(f"{name:13s} params {c['params']:,} (torchvision {meta['num_params']:,}); "
              f"MACs {c['macs']:,} (conv {c['conv_macs']:,}; torchvision {meta['_ops']} G)")

    counts = {
        "convention": "per image; macs = conv_macs + linear_macs; Conv2d: out_elems (C_out*H_out*W_out) * "
                      "(in_channels/groups) * kh * kw; Linear: in_features * out_features; nothing else "
                      "counted (no BN, activations, pooling, adds, biases). params = sum of numel of "
                      "parameters (buffers excluded). convs: [name, out, in, groups, kh, kw, stride, padding] "
                      "in named_modules order (stride/padding symmetric); conv_out_hw aligned with convs.",
        **counts,
    }
    with open(os.path.join(out, "counts.json"), "w") as f:
        f.write(to_json(counts) + "\n")

    versions = {p: importlib.metadata.version(p) for p in ("torch", "torchvision", "zennit", "safetensors")}
    with open(os.path.join(out, "PROVENANCE.md"), "w") as f:
        f.write(provenance(versions, notes))
    print("wrote", out)


def provenance(versions, notes):
    rows = "\n".join(
        f"| {arch} | {'x'.join(map(str, FIXTURES[arch][1]))} | {n['params']:,} | {n['convs']} | "
        f"{n['logit_absmax']:.3g} | {n['rel_absmax']:.3g} | {n['f32_gap']:.1e} | "
        f"{n['sizes']['weights']:,} | {FIXTURES[arch][3]} |"
        for arch, n in notes.items()
    )
    return PROVENANCE.format(py=".".join(map(str, sys.version_info[:3])), rows=rows, **versions)


PROVENANCE = """\
# torchvision-graph fixtures

Made by `python3 scripts/graph_fixtures.py` (Python {py}, torch {torch}, torchvision {torchvision},
zennit {zennit}, safetensors {safetensors}; CPU, `torch.set_num_threads(1)`). Rerunning it
reproduces the files. The script's docstring has the full recipe.

## Fixtures

Per `ARCH/`: `weights.pth` (`torch.save` of the full torchvision `state_dict()`, key names unchanged,
`num_batches_tracked` dropped, f32), `inputs.safetensors` (`images` (4,3,H,W) f32 N(0,1),
`labels` (4,) i64 in 0..10), `expected.safetensors` (`logits` (4,10) f32 of the plain eval-mode
model; `rel.<conv name>` (out_channels,) f64 for every `Conv2d`).

| arch | input | params | convs | max abs logit | max abs rel | f32 gap | weights bytes | canonizer |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

- alexnet: torchvision `AlexNet(num_classes=10)` with the convs/linears at the same indices
  swapped for narrow ones: features 3-8-24-48-32-32 (torchvision's widths / 8), classifier
  32*36 -> 64 -> 64 -> 10. At 96x96 the last feature map is 2x2, so `AdaptiveAvgPool2d((6,6))`
  replicates each value into a 3x3 block of the 6x6 output (window of each output cell: rows
  floor(i*2/6)..ceil((i+1)*2/6), i.e. a single input cell).
- resnet18 / resnet50: torchvision `ResNet` (subclass whose `__init__` mirrors torchvision's)
  with torchvision's own `BasicBlock` [2,2,2,2] / `Bottleneck` [3,4,6,3]; stem and stage widths
  8, 16, 32, 64 instead of 64..512 (Bottleneck outputs x4). 64x64 input: layer4 is 2x2.
- mobilenet_v2: `torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=10)` as is
  (last_channel stays 1280). 32x32 input: the last feature map is 1x1, so its global-pool rule
  reduces to R_in = x * R / stab(x) (resnet's 2x2 layer4 exercises a real average).
- weights: `torch.manual_seed(0)` before each model, torchvision's default init, then every
  BatchNorm weight U(0.5,1.5), bias N(0,0.1), running_mean N(0,0.1), running_var U(0.5,2.0)
  (eps 1e-5), every existing conv/linear bias U(-0.1,0.1). No rescaling was needed.
- relevance: `zennit.attribution.Gradient` with `zennit.composites.EpsilonPlus(canonizers=[...])`,
  output relevance one-hot on each sample's label (not multiplied by the logit). `rel.<conv>` is
  the relevance at the conv's output *with its BatchNorm merged in* (the gradient left on the
  BN's output tensor; on the conv's own output when no BN follows it), summed over batch and
  space; signed, unnormalised. Computed in float64 from the f32 weights/images (exact casts);
  "f32 gap" above = max abs difference of zennit's float32 run from it, relative to the largest
  |rel| of that model, a floor for the tolerance of an f32 implementation.
- "max abs logit" shows the random init keeps logits O(0.1)-O(10).
- Where a tensor feeds several consumers (a residual block's input: identity branch and
  first conv, or downsample), its relevance is the sum of what each consumer sends back (it
  is a gradient). So `rel.<projection conv>` of a MobileNetV2 block with a residual gets only
  the Sum's branch share, and a block output feeding the next block's Sum gets both shares.
- The rule table below was cross-checked when these files were made: a from-scratch float64
  implementation of exactly that table (torch functional ops, explicit forward per
  architecture, no zennit) reproduced every `rel.*` of all four models to within 1e-13.

## Rules zennit 1.0.0 applies (EpsilonPlus), from its source

Paths are relative to the installed `zennit/` package (zennit 1.0.0; the script asserts the
layer map below at startup). `EpsilonPlus.__init__(epsilon=1e-6, stabilizer=1e-6)`
(composites.py:363) builds the layer map `layer_map_base(stabilizer)` (composites.py:255-275) +
`[(Convolution, ZPlus), (torch.nn.Linear, Epsilon)]` (composites.py:368-371); a module gets the
first entry whose type matches (`LayerMapComposite.mapping`, composites.py:61), one hook per
module instance from `named_modules()` (core.py:917-939), also for modules called more than once
(ResNet blocks' shared `relu`). Modules without an entry get the plain autograd gradient.

`stab(z) = z + eps * sign(z)` with sign(0) = +1 (`stabilize`, core.py:97-128; eps = 1e-6
everywhere here). Notation: x = layer input, R = relevance at the layer output.

| layer | rule | exact computation |
| --- | --- | --- |
| `Conv2d` (all, incl. the first layer and depthwise `groups=C`) | `ZPlus(stabilizer=1e-6)` (rules.py:178-211) | z = conv(x+, W+, b+) + conv(x-, W-, no bias), with x+ = max(x,0), x- = min(x,0), W+ = max(W,0), W- = min(W,0), b+ = max(b,0); s = R / stab(z); R_in = x+ * conv_transpose(s, W+) + x- * conv_transpose(s, W-), where conv_transpose(s, W) is the gradient of conv(., W) w.r.t. its input (same stride/padding/groups). The positive bias b+ IS in the denominator (rules.py:205 clamps every parameter incl. bias; rules.py:206 zeroes the bias only for the W- term). z >= 0, so stab(z) = z + 1e-6. Depthwise: nothing special, the hook reruns the module's own forward with modified params (core.py:792-806), so groups apply as in the forward. W and b are the BN-merged ones. |
| `Linear` | `Epsilon(epsilon=1e-6)` (rules.py:97-122) | z = W x + b (full signed bias); R_in = x * W^T (R / stab(z)) (rules.py:120-121). Also the last layer (R there = one-hot). |
| residual add: zennit `Sum` (layer.py:22-48) on `torch.stack([identity, branch], -1)` | `Norm(stabilizer=1e-6)` (rules.py:350-371; composites.py:272) | z = a + b; R_a = a * R / stab(z), R_b = b * R / stab(z). ResNet: torchvision.py:92-93 (Bottleneck), 158-159 (BasicBlock). MobileNetV2: same via this script's canonizer. |
| `AdaptiveAvgPool2d` / `AvgPool2d` | `Norm(stabilizer=1e-6)` (composites.py:273; types.py:101-110) | z = avgpool(x); R_in = x * avgpool_backward(R / stab(z)): each input cell i gets x_i * sum over the output windows o containing i of R_o / (stab(z_o) * size(o)). Global pool: R_in = x * R / (HW * stab(mean x)). 2x2 -> 6x6 replication (alexnet): R_in_i = x_i * (sum of R_o over the 9 outputs o copying i) / stab(x_i). |
| `MaxPool2d` (AlexNet 3x3/2 overlapping; ResNet 3x3/2 pad 1) | none: types.MaxPool exists (types.py:113-122) but EpsilonPlus maps no rule to it | plain gradient, winner-take-all: each output's R goes to its window's argmax (PyTorch picks the first maximum in row-major window order; padding never wins); an input that wins several overlapping windows accumulates their R. |
| `ReLU`, `ReLU6` | `Pass()` (rules.py:325-347; composites.py:271; ReLU6 is in types.Activation, types.py:137) | R_in = R unchanged, NOT masked by the activation's derivative (also for ReLU6 inputs > 6 or < 0). |
| `BatchNorm2d` | merged into the preceding conv by the canonizer; `Pass()` on the leftover BN (composites.py:274) | merge (canonizers.py:117-150): scale = gamma / sqrt(running_var + eps); W' = W * scale (per output channel), b' = (b - running_mean) * scale + beta (b = 0 for bias-free convs); the BN becomes the identity. A BN is merged when it is the next leaf module after a conv in registration order (SequentialMergeBatchNorm, canonizers.py:165-189): every BN in these models. |
| `Dropout` (eval), `torch.flatten`, `view` | none | plain gradient = identity / reshape. |

## Canonizers

- alexnet: `SequentialMergeBatchNorm()` (nothing to merge; no residuals).
- resnet18 / resnet50: `zennit.torchvision.ResNetCanonizer()` = SequentialMergeBatchNorm +
  BasicBlock/Bottleneck `forward` replaced so `identity + out` becomes
  `Sum()(torch.stack([identity, out], -1))` (torchvision.py:30-175). `downsample.0` is merged with
  `downsample.1`.
- mobilenet_v2: this script's `mobilenet_v2_canonizer()`:
  1. `SequentialMergeBatchNorm()` (every `Conv2dNormActivation` conv and each block's
     projection conv + BN).
  2. `InvertedResidual` blocks with `use_res_connect` get `forward = Sum()(stack([x, conv(x)], -1))`,
     the same construction zennit uses for ResNet blocks. Without it the plain `x + conv(x)` is
     a gradient node that hands the full R to both branches (relevance duplicated).
  3. `MobileNetV2.forward` uses the functional `adaptive_avg_pool2d`, which would get the plain
     gradient (R/HW to every cell, not the Norm rule). The canonizer adds a
     `canonizer_avgpool = nn.AdaptiveAvgPool2d((1,1))` module and a forward using it. No
     parameters change, so weights and logits are unaffected.
  4. ReLU6 needs nothing: zennit.types.Activation already lists it, so EpsilonPlus gives it Pass().

## counts.json

Full-size torchvision alexnet, resnet18, resnet34, resnet50, mobilenet_v2 (1000 classes,
architecture only, no weights) at 3x224x224, and the four fixture models at their fixture
inputs (`fixture_ARCH`). Per image, forward hooks:
Conv2d MACs = C_out*H_out*W_out * (in_channels/groups) * kh * kw; Linear MACs = in * out;
nothing else counted (BN, activations, pools, adds, biases). `macs = conv_macs + linear_macs`.
`params` = sum of `numel` over parameters (buffers excluded), torchvision's published number
(`torchvision_num_params`). `torchvision_gmacs` is torchvision's published `_ops` (which it calls
GFLOPS but counts MACs) for comparison. `convs`: `[name, out, in, groups, kh, kw, stride,
padding]` in `named_modules()` order; `conv_out_hw` is each conv's output H, W, aligned with it.
"""


if __name__ == "__main__":
    main()
