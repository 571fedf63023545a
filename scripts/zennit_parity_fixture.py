#!/usr/bin/env python3
"""Build the LRP parity fixture with zennit (an independent PyTorch LRP implementation).

A small VGG-like net with fixed random weights ([8, 8, M, 16, M] features, 16x16 input,
flatten -> 32 -> 5 classifier) is explained with zennit's EpsilonPlus composite, one-hot on
each sample's label. For every conv, the relevance at its output (= the gradient zennit's
modified backward leaves on the tensor entering the following ReLU) is summed over space and
batch. Outputs, in tests/fixtures/zennit/:
  weights.safetensors    features.{0,2,5}.{weight,bias}, classifier.{0,2}.{weight,bias}
  inputs.safetensors     images (N,3,16,16) f32, labels (N,) i64
  relevance.safetensors  conv{k} (filters,) f64 per conv, in conv order
Usage (the script makes its own throwaway venv when torch/zennit are missing):
  python3 scripts/zennit_parity_fixture.py [OUT_DIR]
"""
import os
import subprocess
import sys

VENV = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "lrprune", "refvenv")
PKGS = ["torch", "zennit==1.0.0", "safetensors", "numpy"]


def ensure_deps():
    try:
        import torch, zennit, safetensors  # noqa: F401
        return
    except ImportError:
        pass
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    subprocess.check_call([py, "-m", "pip", "install", "-q", *PKGS])
    os.execv(py, [py, *sys.argv])


def main():
    ensure_deps()
    import torch
    import zennit
    from safetensors.torch import save_file
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlus

    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "zennit")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    features = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
    )
    classifier = torch.nn.Sequential(torch.nn.Linear(16 * 4 * 4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
    for m in list(features) + list(classifier):
        if hasattr(m, "bias") and m.bias is not None:
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    model = torch.nn.Sequential(features, torch.nn.Flatten(), classifier).eval()

    n = 12
    images = torch.randn(n, 3, 16, 16) * 2.0  # negative inputs exercise z+'s x- branch
    labels = torch.randint(0, 5, (n,))

    # Retain the relevance arriving at each conv's output: hook the ReLU that follows.
    convs = [i for i, m in enumerate(features) if isinstance(m, torch.nn.Conv2d)]
    kept = {}

    def keep(k):
        def hook(_module, inputs, _output):
            inputs[0].retain_grad()
            kept[k] = inputs[0]
        return hook

    for k, i in enumerate(convs):
        features[i + 1].register_forward_hook(keep(k))

    one_hot = torch.eye(5)[labels]
    with Gradient(model=model, composite=EpsilonPlus()) as attributor:
        _, rel_in = attributor(images.requires_grad_(), one_hot)
    relevance = {f"conv{k}": kept[k].grad.sum(dim=(0, 2, 3)).double().contiguous() for k in range(len(convs))}

    weights = {}
    for i in convs:
        weights[f"features.{i}.weight"] = features[i].weight.detach().contiguous()
        weights[f"features.{i}.bias"] = features[i].bias.detach().contiguous()
    for i in (0, 2):
        weights[f"classifier.{i}.weight"] = classifier[i].weight.detach().contiguous()
        weights[f"classifier.{i}.bias"] = classifier[i].bias.detach().contiguous()
    save_file(weights, os.path.join(out, "weights.safetensors"))
    save_file({"images": images.detach().contiguous(), "labels": labels.long()}, os.path.join(out, "inputs.safetensors"))
    save_file(relevance, os.path.join(out, "relevance.safetensors"))
    with open(os.path.join(out, "PROVENANCE.md"), "w") as f:
        f.write(
            "# zennit parity fixture\n\n"
            f"- made by `python3 scripts/zennit_parity_fixture.py` with torch {torch.__version__}, "
            f"zennit {zennit.__version__ if hasattr(zennit, '__version__') else '1.0.0'}\n"
            "- composite: `zennit.composites.EpsilonPlus()` (conv z+ incl. positive bias, linear epsilon 1e-6, "
            "ReLU pass, max-pool plain gradient = winner-take-all)\n"
            "- net: features [8, 8, M, 16, M] (3x3, pad 1), flatten, Linear(256,32), ReLU, Linear(32,5); "
            "torch.manual_seed(0) init, biases U(-0.2, 0.2)\n"
            f"- inputs: {n} images N(0, 2^2) of 3x16x16, random labels in 0..5; output relevance one-hot on the label\n"
            "- relevance: each conv output's relevance summed over batch and space (signed, unnormalised)\n"
        )
    print("wrote", out, {k: [round(x, 4) for x in v[:3].tolist()] for k, v in relevance.items()})


if __name__ == "__main__":
    main()
