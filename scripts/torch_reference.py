#!/usr/bin/env python3
"""PyTorch / zennit reference for lrprune: conv throughput and the pruning sweep, independently.

`lrprune bench` runs this script as a subprocess to put lrprune's numbers (Candle on CPU, its
own LRP engine) next to the same work done by PyTorch and zennit. stdout is exactly ONE JSON
object; progress and diagnostics go to stderr.

Usage (the script makes its own venv when torch/zennit are missing, see `ensure_deps`):

  python3 scripts/torch_reference.py conv  [--reps 5] [--threads N]
  python3 scripts/torch_reference.py sweep DIR [--methods lrp,l1] [--threads N] [--check]

`conv` -- forward throughput of `F.conv2d` (3x3, stride 1, padding 1, with bias) on the 13
  VGG16 conv shapes, at 32x32 with batch 64 and at 224x224 with batch 8; input N(0,1),
  weight and bias N(0, 0.05), under `torch.no_grad()`; one warm-up, then the median of
  `--reps` runs (upper median for even counts, as `lrprune bench`) by `time.perf_counter()`.
  GFLOP = 2*B*Cout*H*W*Cin*9/1e9. JSON: {torch_version, threads, reps, tables: [{size,
  batch, layers: [{layer, cin, cout, map, gflop, ms, gflops}], total: {gflop, ms, gflops}}]}.

`sweep DIR` -- reruns lrprune's fixed-grid iterative pruning sweep on a task written by
  `lrprune export` (DIR/weights.safetensors, inputs.safetensors = training/reference split,
  test.safetensors, task.json), once per method (`lrp`, `l1`, `l2`), and times each method's
  whole loop (scoring, selecting, compacting and evaluating every step; file loading and
  one warm-up forward pass excluded). JSON: {torch_version, zennit_version, threads, run_id, n_filters, methods:
  {METHOD: {wall_s, step0_s, split: {score_s, compact_s, eval_s} (steps 1…, scores including
  the choice of filters), steps: [{step, rate, top1, balanced, layer_filters, s}],
  auc_class, auc_top1}}}.

What `sweep` reproduces of lrprune, rule by rule (the Rust sources named in brackets):
  * Network: VGG features as torchvision (conv -> ReLU, 2x2/2 max-pool at every "M") ->
    global average pool -> optional standardisation (x - mean) * inv_std -> linear head
    (classifier.0, 2, ... with ReLU between). Predicted class = argmax of the logits.
  * Grid: r_k = min(k*step, max_rate), k = 1, 2, ... until r_k >= max_rate - 1e-12; at step
    k filters are removed until round(r_k * N) are gone in total (round half away from zero,
    as Rust) [prune/schedule.rs].
  * Selection: alive filters sorted by (score, layer, index); the lowest go first, skipping
    a filter whose layer is at `min_filters_per_layer` [prune/select.rs]. Signed zeros are
    folded to +0 so exact-zero scores (dead filters) tie-break by layer and index.
  * Compaction after every step from the intact network: drop the conv's output channel
    (weight row, bias), the next conv's input channel, and for the last conv the
    standardisation entry and classifier.0 column; new, smaller modules every step
    [prune/compact.rs].
  * l1 / l2: per-filter |w| sum / L2 norm of the current compacted conv weights (f32, as
    Candle), no normalisation [prune/criteria.rs].
  * lrp: zennit composite (EpsilonPlus = z+ with b+ for every conv, epsilon 1e-6 for linears,
    ReLU Pass, adaptive average pool Norm, max-pool plain gradient = winner-take-all), with
    the standardisation mapped to zennit's Pass rule, as lrprune passes relevance through
    element-wise layers. One-hot on the TRUE label at the logits; relevance of a filter =
    relevance at its conv OUTPUT (the gradient zennit's modified backward leaves on the conv
    module's output tensor = what the following ReLU's Pass rule hands down), summed over
    space and over
    all reference images, in batches of `data.batch_size`; then optional |.| and per-layer
    normalisation ("sum": v / |sum v|, "l2": v / ||v||, "none"; denominator 1 below 1e-30)
    [lrp/filters.rs, lrp/propagate.rs]. Recomputed on the compacted network every step.
  * Evaluation of every step, step 0 included, on the TEST split in batches: top-1 and
    balanced accuracy (mean over the classes present) [eval.rs].
  * AUC: trapezoid over the achieved rates (1 - alive/N), divided by the rate span (the last
    achieved rate, 0.90009 for 3802/4224), as lrprune's report [report/summary.rs].

`selftest DIR` (a development aid) writes a synthetic export to DIR -- random He-scaled VGG16
weights under the real keys, 3 classes of 32x32 noise images, a least-squares head -- so that
`sweep DIR --check` can be exercised without lrprune.

It matches lrprune's decisions exactly only up to floating point: PyTorch and Candle sum in a
different order, so near-ties can break differently and the curves may drift apart after the
first such step. Step 0 (no decisions) should agree to the test image (only a logit near-tie
could flip). `--check` verifies on every network of the sweep (not timed) that
  * the compacted network computes the same logits as the intact network with the pruned
    filters zeroed (weight and bias) and their standardised features removed, and
  * for `lrp` with a z+ composite, zennit's per-filter relevance equals an explicit reverse
    pass written here with lrprune's own rules (z+ with b+, epsilon, Pass through ReLU and
    standardisation, GAP as 1/HW affine, max-pool winner-take-all with ties split evenly).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

VENV = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "lrprune", "refvenv")
PKGS = ["torch", "numpy", "safetensors"]
ZENNIT = "zennit==1.0.0"  # declares Requires-Python >= 3.11.11; works on 3.11.7

# torchvision's VGG configurations: conv widths, "M" = 2x2 max-pool.
VGG_CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def ensure_deps(modules=("numpy", "safetensors", "torch", "zennit")):
    """Import `modules`; else re-exec in the reference venv, creating it and installing into
    it as needed (pip: torch numpy safetensors, then zennit). `conv` needs torch alone, so
    it runs on a machine with PyTorch and no package index (a GPU box)."""
    import importlib
    try:
        for m in modules:
            importlib.import_module(m)
        return
    except ImportError as e:
        missing = e.name
    py = os.path.join(VENV, "bin", "python")
    in_venv = os.path.realpath(sys.prefix) == os.path.realpath(VENV)
    if in_venv and os.environ.get("LRPRUNE_REFVENV_INSTALLED"):
        sys.exit(f"torch_reference: `{missing}` is still missing from {VENV} (fix: delete that venv and rerun)")
    if in_venv:
        log(f"torch_reference: `{missing}` not importable; installing into {VENV}")
        pip = [py, "-m", "pip", "install", "-q"]
        subprocess.check_call([*pip, *PKGS], stdout=sys.stderr)
        subprocess.check_call([*pip, "--ignore-requires-python", ZENNIT], stdout=sys.stderr)
        os.environ["LRPRUNE_REFVENV_INSTALLED"] = "1"
    elif not os.path.exists(py):
        log(f"torch_reference: `{missing}` not importable; creating {VENV}")
        subprocess.check_call([sys.executable, "-m", "venv", VENV], stdout=sys.stderr)
    os.execv(py, [py, *sys.argv])


# --------------------------------------------------------------------------------------------
# conv: F.conv2d throughput on the VGG16 shapes


def median_time(reps, fn):
    """Seconds of `fn()`: one warm-up, then the upper median of `reps` runs (as lrprune)."""
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def conv_table(torch, size, batch, reps, device="cpu"):
    import torch.nn.functional as F

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    layers, in_c, s, k = [], 3, size, 0
    total_flop, total_s = 0.0, 0.0
    for item in VGG_CFGS["vgg16"]:
        if item == "M":
            s //= 2
            continue
        out_c = item
        x = torch.randn(batch, in_c, s, s, device=device)
        w = torch.randn(out_c, in_c, 3, 3, device=device) * 0.05
        b = torch.randn(out_c, device=device) * 0.05

        def run():
            F.conv2d(x, w, b, stride=1, padding=1)
            sync()

        with torch.no_grad():
            secs = median_time(reps, run)
        flop = 2.0 * batch * out_c * s * s * in_c * 9
        total_flop += flop
        total_s += secs
        k += 1
        row = {"layer": f"conv{k}", "cin": in_c, "cout": out_c, "map": s, "gflop": flop / 1e9,
               "ms": secs * 1e3, "gflops": flop / secs / 1e9}
        log(f"  {size}x{size} b{batch} conv{k:<2} {in_c:>3}->{out_c:<3} {s:>3}^2 "
            f"{row['gflop']:7.2f} GFLOP {row['ms']:8.1f} ms {row['gflops']:6.1f} GFLOP/s")
        layers.append(row)
        in_c = out_c
    return {"size": size, "batch": batch, "layers": layers,
            "total": {"gflop": total_flop / 1e9, "ms": total_s * 1e3, "gflops": total_flop / total_s / 1e9}}


def cmd_conv(args, torch):
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("torch_reference: --device cuda but torch sees no GPU")
        # PyTorch's defaults are TF32 for cuDNN convs and fp32 for matmuls; both follow
        # --precision here, as lrprune's (src/model/precision.rs).
        tf32 = args.precision == "tf32"
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        # Off by default, as in PyTorch; on, cuDNN times every algorithm once per shape
        # (what lrprune's LRPRUNE_CUDNN_ALGO=find does).
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
    sizes = [tuple(int(v) for v in p.split("x")) for p in args.sizes.split(",")]
    tables = [conv_table(torch, size, batch, args.reps, args.device) for size, batch in sizes]
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    return {"torch_version": torch.__version__, "threads": torch.get_num_threads(), "reps": args.reps,
            "device": args.device, "gpu": gpu, "precision": args.precision,
            "cudnn_benchmark": args.cudnn_benchmark, "tables": tables}


# --------------------------------------------------------------------------------------------
# sweep: the network


def build_modules(torch):
    """Module classes, defined once torch is importable."""
    nn = torch.nn

    class Standardize(nn.Module):
        """Per-feature (x - mean) * inv_std of the head's input (lrprune's Layer::Standardize)."""

        def __init__(self, mean, inv_std):
            super().__init__()
            self.register_buffer("mean", mean)
            self.register_buffer("inv_std", inv_std)

        def forward(self, x):
            return (x - self.mean) * self.inv_std

    class RefNet(nn.Module):
        """VGG features -> GAP -> [standardize] -> linear head, one module per layer (zennit
        hooks modules, so every ReLU and pool is its own instance)."""

        def __init__(self, convs, pool_after, standardize, linears):
            super().__init__()
            self.convs = nn.ModuleList(convs)
            self.relus = nn.ModuleList(nn.ReLU() for _ in convs)
            self.pool_after = list(pool_after)
            self.pools = nn.ModuleList(nn.MaxPool2d(2, 2) for p in pool_after if p)
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten()
            self.standardize = standardize
            self.head = nn.ModuleList(linears)
            self.head_relus = nn.ModuleList(nn.ReLU() for _ in linears[1:])

        def forward(self, x, taps=None):
            """Logits; with `taps`, appends every conv's output tensor (pre-ReLU) to it."""
            p = 0
            for i, conv in enumerate(self.convs):
                x = conv(x)
                if taps is not None:
                    taps.append(x)
                x = self.relus[i](x)
                if self.pool_after[i]:
                    x = self.pools[p](x)
                    p += 1
            x = self.flatten(self.gap(x))
            if self.standardize is not None:
                x = self.standardize(x)
            for j, lin in enumerate(self.head):
                if j > 0:
                    x = self.head_relus[j - 1](x)
                x = lin(x)
            return x

    return Standardize, RefNet


class Task:
    """An exported lrprune task: the intact network's tensors, both splits, the settings."""

    def __init__(self, d):
        from safetensors.torch import load_file

        with open(os.path.join(d, "task.json")) as f:
            meta = json.load(f)
        self.meta = meta
        self.run_id = meta.get("run_id", "")
        cfg = meta.get("config") or {}
        pr = cfg.get("pruning") or {}
        self.step = float(pr.get("step", 0.05))
        self.max_rate = float(pr.get("max_rate", 0.9))
        self.min_per_layer = int(pr.get("min_filters_per_layer", 1))
        self.batch_size = int((cfg.get("data") or {}).get("batch_size", 100))
        lrp = cfg.get("lrp") or {}
        self.composite = lrp.get("composite", "epsilon-plus")
        self.abs = bool(lrp.get("abs", False))
        self.normalize = lrp.get("normalize", "sum")
        hidden = (cfg.get("head") or {}).get("hidden") or []

        w = load_file(os.path.join(d, "weights.safetensors"))
        keys = [int(k) for k in meta["conv_keys"]]
        self.conv_w = [w[f"features.{k}.weight"].float() for k in keys]
        self.conv_b = [w[f"features.{k}.bias"].float() for k in keys]
        self.pool_after = self._pools(cfg.get("model") or {}, len(keys))
        in_c = self.conv_w[0].shape[1]
        for k, (cw, cb) in zip(keys, zip(self.conv_w, self.conv_b)):
            if cw.dim() != 4 or cw.shape[1] != in_c or tuple(cw.shape[2:]) != (3, 3) or cb.shape != cw.shape[:1]:
                sys.exit(f"features.{k}: weight {tuple(cw.shape)} / bias {tuple(cb.shape)} do not chain "
                         f"(expected (*, {in_c}, 3, 3))")
            in_c = cw.shape[0]
        if "standardize.mean" in w:
            self.mean = w["standardize.mean"].float()
            self.inv_std = w["standardize.inv_std"].float()
            if self.mean.shape != (in_c,) or self.inv_std.shape != (in_c,):
                sys.exit(f"standardize.mean/inv_std must have shape ({in_c},)")
        else:
            self.mean = self.inv_std = None
        idx = sorted(int(k.split(".")[1]) for k in w if k.startswith("classifier.") and k.endswith(".weight"))
        if idx != list(range(0, 2 * len(idx), 2)) or len(idx) != len(hidden) + 1:
            sys.exit(f"classifier layers {idx} do not match head.hidden = {hidden} "
                     "(expected classifier.0, .2, ... : one linear per hidden width plus the output)")
        self.lin_w = [w[f"classifier.{i}.weight"].float() for i in idx]
        self.lin_b = [w[f"classifier.{i}.bias"].float() for i in idx]
        f_in = in_c
        for i, lw in zip(idx, self.lin_w):
            if lw.dim() != 2 or lw.shape[1] != f_in:
                sys.exit(f"classifier.{i}.weight has shape {tuple(lw.shape)}, expected (*, {f_in})")
            f_in = lw.shape[0]
        self.n_classes = f_in

        def split(name):
            t = load_file(os.path.join(d, name))
            return t["images"].float().contiguous(), t["labels"].long()

        self.train_x, self.train_y = split("inputs.safetensors")
        self.test_x, self.test_y = split("test.safetensors")
        self.filters = [cw.shape[0] for cw in self.conv_w]

    @staticmethod
    def _pools(model, n_convs):
        """Per conv: is a 2x2 max-pool right after its ReLU? From the spec's arch / cfg."""
        arch = model.get("arch", "vgg16")
        cfg = model.get("cfg") if arch == "custom" else VGG_CFGS.get(arch)
        if cfg is None:
            sys.exit(f"unknown model arch `{arch}` in task.json")
        pools = []
        for item in cfg:
            if item == "M":
                if not pools:
                    sys.exit("a cfg may not start with a pool")
                pools[-1] = True
            else:
                pools.append(False)
        if len(pools) != n_convs:
            sys.exit(f"arch `{arch}` has {len(pools)} convs but conv_keys lists {n_convs}")
        return pools


class Pruner:
    """Compaction, criteria and evaluation of one task (all on CPU, f32)."""

    def __init__(self, torch, task):
        self.torch, self.task = torch, task
        self.Standardize, self.RefNet = build_modules(torch)

    # --- compaction [prune/compact.rs] --------------------------------------------------------
    def compact(self, keep):
        """A new RefNet with only the filters alive in `keep` (per layer: sorted index lists)."""
        torch, t = self.torch, self.task
        convs, prev = [], None
        for cw, cb, idx in zip(t.conv_w, t.conv_b, keep):
            idx_t = torch.tensor(idx, dtype=torch.long)
            w = cw if prev is None else cw.index_select(1, prev)
            w, b = w.index_select(0, idx_t).contiguous(), cb.index_select(0, idx_t).contiguous()
            conv = torch.nn.utils.skip_init(torch.nn.Conv2d, w.shape[1], w.shape[0], 3, padding=1)
            conv.weight = torch.nn.Parameter(w, requires_grad=False)
            conv.bias = torch.nn.Parameter(b, requires_grad=False)
            convs.append(conv)
            prev = idx_t
        std = None
        if t.mean is not None:
            std = self.Standardize(t.mean.index_select(0, prev), t.inv_std.index_select(0, prev))
        linears = []
        for j, (lw, lb) in enumerate(zip(t.lin_w, t.lin_b)):
            if j == 0:
                lw = lw.index_select(1, prev)
            lin = torch.nn.utils.skip_init(torch.nn.Linear, lw.shape[1], lw.shape[0])
            lin.weight = torch.nn.Parameter(lw.contiguous(), requires_grad=False)
            lin.bias = torch.nn.Parameter(lb.clone(), requires_grad=False)
            linears.append(lin)
        return self.RefNet(convs, t.pool_after, std, linears).eval()

    def masked_intact(self, keep):
        """The intact network with pruned filters' weight and bias zeroed and their
        standardised features removed (mean = inv_std = 0): lrprune's prune::mask::apply."""
        torch, t = self.torch, self.task
        full = self.compact([list(range(n)) for n in t.filters])
        with torch.no_grad():
            for conv, idx, n in zip(full.convs, keep, t.filters):
                m = torch.zeros(n)
                m[idx] = 1.0
                conv.weight.mul_(m.view(-1, 1, 1, 1))
                conv.bias.mul_(m)
            if full.standardize is not None:  # `m` is now the last conv's mask
                full.standardize.mean.mul_(m)
                full.standardize.inv_std.mul_(m)
        return full

    # --- evaluation [eval.rs] -------------------------------------------------------------------
    def logits(self, net, x):
        torch, bs = self.torch, self.task.batch_size
        with torch.no_grad():
            return torch.cat([net(x[i:i + bs]) for i in range(0, len(x), bs)])

    def evaluate(self, net):
        t = self.task
        out = self.logits(net, t.test_x)
        if not bool(self.torch.isfinite(out).all()):
            sys.exit("the network produced NaN/Inf logits")
        pred = out.argmax(1)
        y = t.test_y
        top1 = float((pred == y).double().mean())
        accs = [float((pred[y == c] == c).double().mean()) for c in range(t.n_classes) if bool((y == c).any())]
        return top1, sum(accs) / max(len(accs), 1)

    # --- criteria [prune/criteria.rs, lrp/filters.rs] -------------------------------------------
    def weight_norm(self, net, p):
        out = []
        for conv in net.convs:
            w = conv.weight.flatten(1)
            v = w.abs().sum(1) if p == 1 else w.square().sum(1).sqrt()
            out.append(v.double().tolist())
        return out

    def composite(self):
        from zennit.composites import LayerMapComposite, layer_map_base
        from zennit.rules import AlphaBeta, Epsilon, Pass, ZPlus
        from zennit.types import Convolution

        name = self.task.composite
        # The first conv's rule cannot change relevance at any conv OUTPUT, so the -flat / -zb
        # variants score filters exactly as epsilon-plus does.
        if name in ("epsilon-plus", "epsilon-plus-flat", "epsilon-plus-zb"):
            conv_rule = ZPlus(stabilizer=1e-6)
        elif name == "epsilon-plus-nobias":
            conv_rule = ZPlus(stabilizer=1e-6, zero_params=["bias"])
        elif name == "epsilon-alpha2-beta1":
            conv_rule = AlphaBeta(alpha=2.0, beta=1.0, stabilizer=1e-6)
        else:
            sys.exit(f"composite `{name}` has no zennit counterpart here")
        layer_map = [(self.Standardize, Pass())] + layer_map_base(1e-6) + [
            (Convolution, conv_rule),
            (self.torch.nn.Linear, Epsilon(epsilon=1e-6)),
        ]
        return LayerMapComposite(layer_map=layer_map)

    def relevance(self, net):
        """Per conv, per alive filter: relevance at the conv output summed over space and all
        reference images (f64 accumulation of f32 per-batch sums, as lrprune)."""
        torch, t = self.torch, self.task
        sums = [torch.zeros(conv.out_channels, dtype=torch.float64) for conv in net.convs]
        eye = torch.eye(t.n_classes)
        with self.composite().context(net) as model:
            for i in range(0, len(t.train_x), t.batch_size):
                x = t.train_x[i:i + t.batch_size].clone().requires_grad_(True)
                y = t.train_y[i:i + t.batch_size]
                taps = []
                out = model(x, taps)
                grads = torch.autograd.grad(out, taps, grad_outputs=eye[y])
                for s, g in zip(sums, grads):
                    s += g.sum((2, 3)).double().sum(0)
        for k, s in enumerate(sums):
            if not bool(torch.isfinite(s).all()):
                sys.exit(f"LRP produced NaN/Inf relevance at conv {k}")
        return [s.tolist() for s in sums]

    def explicit_relevance(self, net):
        """The same sums as `relevance`, from an explicit reverse pass with lrprune's rules
        (lrp/propagate.rs, lrp/rules.rs) instead of zennit: the `--check` cross-check."""
        torch, t = self.torch, self.task
        F = torch.nn.functional

        def stab(z, eps=1e-6):  # z + eps * (sign(z) + [z == 0])
            return z + eps * ((z >= 0).to(z.dtype) * 2 - 1)

        def zplus(x, w, b, r):
            xp, xn, wp, wn = x.clamp(min=0), x.clamp(max=0), w.clamp(min=0), w.clamp(max=0)
            z = F.conv2d(xp, wp, padding=1) + F.conv2d(xn, wn, padding=1) + b.clamp(min=0).view(1, -1, 1, 1)
            s = r / stab(z)
            back = torch.nn.grad.conv2d_input
            return xp * back(x.shape, wp, s, padding=1) + xn * back(x.shape, wn, s, padding=1)

        def max_pool_wta(x, r):
            y = F.max_pool2d(x, 2)
            up = lambda v: v.repeat_interleave(2, 2).repeat_interleave(2, 3)  # noqa: E731
            h, w = 2 * y.shape[2], 2 * y.shape[3]
            win = (x[..., :h, :w] == up(y)).to(x.dtype)
            out = torch.zeros_like(x)
            out[..., :h, :w] = win * up(r / (F.avg_pool2d(win, 2) * 4))
            return out

        sums = [torch.zeros(conv.out_channels, dtype=torch.float64) for conv in net.convs]
        eye = torch.eye(t.n_classes)
        with torch.no_grad():
            for i in range(0, len(t.train_x), t.batch_size):
                h, y = t.train_x[i:i + t.batch_size], t.train_y[i:i + t.batch_size]
                conv_in, pool_in = [], {}
                for c, conv in enumerate(net.convs):
                    conv_in.append(h)
                    h = conv(h).relu()
                    if net.pool_after[c]:
                        pool_in[c] = h
                        h = F.max_pool2d(h, 2)
                gap_in = h
                h = h.mean((2, 3))
                if net.standardize is not None:
                    h = net.standardize(h)
                lin_in = []
                for j, lin in enumerate(net.head):
                    if j > 0:
                        h = h.relu()
                    lin_in.append(h)
                    h = lin(h)
                r = eye[y]
                for lin, a in reversed(list(zip(net.head, lin_in))):  # epsilon; ReLU / standardize pass
                    r = a * ((r / stab(a @ lin.weight.T + lin.bias)) @ lin.weight)
                a = gap_in  # GAP: affine with weights 1/HW (zennit's Norm rule)
                r = a * (r / stab(a.mean((2, 3))) / (a.shape[2] * a.shape[3]))[:, :, None, None]
                for c in reversed(range(len(net.convs))):
                    if net.pool_after[c]:
                        r = max_pool_wta(pool_in[c], r)
                    sums[c] += r.sum((2, 3)).double().sum(0)  # relevance at conv c's output
                    if c > 0:
                        r = zplus(conv_in[c], net.convs[c].weight, net.convs[c].bias, r)
        return [v.tolist() for v in sums]

    def check(self, method, keep, net):
        """`--check` on one network of the sweep; exits on a mismatch."""
        torch, t = self.torch, self.task
        x = t.test_x[: t.batch_size]
        a, b = self.logits(net, x), self.logits(self.masked_intact(keep), x)
        err = float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))
        if err > 1e-4:
            sys.exit(f"--check: compacted and masked networks differ (rel. err {err:.2e})")
        msg = f"compacted == masked (rel. err {err:.1e})"
        if method == "lrp" and t.composite in ("epsilon-plus", "epsilon-plus-flat", "epsilon-plus-zb"):
            err = 0.0
            for k, (z, e) in enumerate(zip(self.relevance(net), self.explicit_relevance(net))):
                z, e = torch.tensor(z), torch.tensor(e)
                err = max(err, float((z - e).abs().max() / e.abs().max().clamp(min=1e-12)))
            if err > 1e-4:
                sys.exit(f"--check: zennit and explicit relevance differ (rel. err {err:.2e})")
            msg += f", zennit == explicit LRP (rel. err {err:.1e})"
        return msg

    def postprocess(self, scores):
        t = self.task
        out = []
        for layer in scores:
            if t.abs:
                layer = [abs(v) for v in layer]
            if t.normalize == "sum":
                d = sum(layer)
            elif t.normalize == "l2":
                d = math.sqrt(sum(v * v for v in layer))
            elif t.normalize == "none":
                d = 1.0
            else:
                sys.exit(f"unknown lrp.normalize `{t.normalize}`")
            d = 1.0 if abs(d) < 1e-30 else abs(d)
            out.append([v / d for v in layer])
        return out

    def scores(self, method, net):
        if method == "l1":
            return self.weight_norm(net, 1)
        if method == "l2":
            return self.weight_norm(net, 2)
        if method == "lrp":
            return self.postprocess(self.relevance(net))
        sys.exit(f"unknown method `{method}` (fix: lrp, l1 or l2)")


# --- selection [prune/select.rs, prune/schedule.rs] -------------------------------------------
def rust_round(x):
    """f64::round: half away from zero (x >= 0 here)."""
    return math.floor(x + 0.5)


def prune_lowest(keep, scores, n, min_per_layer):
    """Remove `n` more filters: lowest score first, ties by layer then index, never taking a
    layer below `min_per_layer`. `scores[l][j]` belongs to the j-th alive filter of layer l."""
    cand = []
    for l, (idx, row) in enumerate(zip(keep, scores)):
        for f, s in zip(idx, row):
            if math.isnan(s):
                sys.exit(f"criterion produced NaN for conv {l} filter {f}")
            cand.append((s + 0.0, l, f))  # + 0.0 folds -0.0 into +0.0
    cand.sort()
    alive = [len(i) for i in keep]
    dead = [set() for _ in keep]
    removed = 0
    for _, l, f in cand:
        if removed == n:
            break
        if alive[l] > min_per_layer:
            dead[l].add(f)
            alive[l] -= 1
            removed += 1
    return [[f for f in idx if f not in d] for idx, d in zip(keep, dead)]


def auc(rates, values):
    """Trapezoid area over the recorded rates divided by their span (lrprune's report)."""
    span = rates[-1] - rates[0]
    if len(rates) < 2 or span <= 0:
        return values[0]
    area = sum((rates[i] - rates[i - 1]) * (values[i] + values[i - 1]) / 2 for i in range(1, len(rates)))
    return area / span


def run_method(pr, method, check):
    """One method's sweep: step 0 = the intact network, then the fixed grid to max_rate."""
    t = pr.task
    total = sum(t.filters)
    keep = [list(range(n)) for n in t.filters]
    t0 = time.perf_counter()
    net = pr.compact(keep)
    top1, bal = pr.evaluate(net)
    step0_s = time.perf_counter() - t0
    steps = [{"step": 0, "rate": 0.0, "top1": top1, "balanced": bal, "layer_filters": list(t.filters),
              "s": step0_s}]
    log(f"[{method}] step 0: rate 0.000 top1 {top1:.4f} balanced {bal:.4f} ({step0_s:.2f}s)")
    k, check_s = 0, 0.0
    if check:
        tc = time.perf_counter()
        log(f"[{method}]   check: {pr.check(method, keep, net)}")
        check_s += time.perf_counter() - tc
    # The steps' time split: scores (the relevance pass for lrp), compaction, evaluation.
    split = {"score_s": 0.0, "compact_s": 0.0, "eval_s": 0.0}
    while not (k > 0 and min(k * t.step, t.max_rate) >= t.max_rate - 1e-12):
        ts = time.perf_counter()
        k += 1
        rate = min(k * t.step, t.max_rate)
        scores = pr.scores(method, net)
        removed = total - sum(len(i) for i in keep)
        n = max(min(rust_round(rate * total), total) - removed, 0)
        keep = prune_lowest(keep, scores, n, t.min_per_layer)
        tp = time.perf_counter()
        split["score_s"] += tp - ts
        net = pr.compact(keep)
        te = time.perf_counter()
        split["compact_s"] += te - tp
        top1, bal = pr.evaluate(net)
        split["eval_s"] += time.perf_counter() - te
        dt = time.perf_counter() - ts
        alive = sum(len(i) for i in keep)
        steps.append({"step": k, "rate": 1.0 - alive / total, "top1": top1, "balanced": bal,
                      "layer_filters": [len(i) for i in keep], "s": dt})
        log(f"[{method}] step {k}: rate {1 - alive / total:.3f} top1 {top1:.4f} balanced {bal:.4f} ({dt:.2f}s)")
        if check:  # not part of the timed sweep
            tc = time.perf_counter()
            log(f"[{method}]   check: {pr.check(method, keep, net)}")
            check_s += time.perf_counter() - tc
    wall = time.perf_counter() - t0 - check_s
    rates = [s["rate"] for s in steps]
    return {"wall_s": wall, "step0_s": step0_s, "steps": steps, "split": split,
            "auc_class": auc(rates, [s["balanced"] for s in steps]),
            "auc_top1": auc(rates, [s["top1"] for s in steps])}


def cmd_sweep(args, torch):
    import zennit

    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in ("lrp", "l1", "l2")]
    if unknown or not names:
        sys.exit(f"--methods: unknown or empty {unknown} (fix: a comma-separated subset of lrp, l1, l2)")
    task = Task(args.dir)
    log(f"task {task.run_id}: {len(task.filters)} convs, {sum(task.filters)} filters, "
        f"{len(task.train_x)} reference / {len(task.test_x)} test images {tuple(task.train_x.shape[1:])}, "
        f"{task.n_classes} classes, batch {task.batch_size}, composite {task.composite}, "
        f"abs={task.abs}, normalize={task.normalize}")
    pr = Pruner(torch, task)
    # Untimed warm-up (thread pool, kernel selection), so the first method is not charged for it.
    pr.logits(pr.compact([list(range(n)) for n in task.filters]), task.test_x[: task.batch_size])
    methods = {}
    for m in names:
        methods[m] = run_method(pr, m, args.check)
        log(f"[{m}] wall {methods[m]['wall_s']:.1f}s, AUC class {methods[m]['auc_class']:.4f}, "
            f"AUC top-1 {methods[m]['auc_top1']:.4f}")
    version = getattr(zennit, "__version__", None)
    if version is None:
        from importlib.metadata import version as v
        version = v("zennit")
    return {"torch_version": torch.__version__, "zennit_version": version, "threads": torch.get_num_threads(),
            "run_id": task.run_id, "n_filters": sum(task.filters), "methods": methods}


# --------------------------------------------------------------------------------------------
# selftest: a synthetic export with random weights (no lrprune needed)


def cmd_selftest(args, torch):
    """Write a synthetic export (random VGG16 weights with the real keys and shapes, 3 classes,
    32x32 random images) to DIR; `sweep DIR` then runs on it."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    os.makedirs(args.dir, exist_ok=True)
    w, keys, idx, in_c = {}, [], 0, 3
    for item in VGG_CFGS["vgg16"]:
        if item == "M":
            idx += 1
            continue
        w[f"features.{idx}.weight"] = torch.randn(item, in_c, 3, 3, generator=g) * math.sqrt(2 / (9 * in_c))
        w[f"features.{idx}.bias"] = torch.randn(item, generator=g) * 0.05
        keys.append(idx)
        idx, in_c = idx + 2, item
    classes, size = 3, 32

    def split(per_class):
        y = torch.arange(classes).repeat_interleave(per_class)
        x = torch.randn(len(y), 3, size, size, generator=g) + y.view(-1, 1, 1, 1).float() * 0.3
        return x.contiguous(), y.long()

    train, test = split(args.train_per_class), split(args.test_per_class)
    # Head: standardised GAP features, least-squares linear fit on the training split.
    net_mods = build_modules(torch)[1]
    convs = []
    for k in keys:
        c = torch.nn.Conv2d(w[f"features.{k}.weight"].shape[1], w[f"features.{k}.weight"].shape[0], 3, padding=1)
        c.weight.data, c.bias.data = w[f"features.{k}.weight"], w[f"features.{k}.bias"]
        convs.append(c)
    pools = Task._pools({"arch": "vgg16"}, 13)
    body = net_mods(convs, pools, None, [torch.nn.Identity()]).eval()
    with torch.no_grad():
        feats = body(train[0])
    mean, std = feats.mean(0), (feats.var(0, unbiased=False) + 1e-6).sqrt()
    z = (feats - mean) / std
    target = torch.eye(classes)[train[1]] * 2 - 1
    sol = torch.linalg.lstsq(torch.cat([z, torch.ones(len(z), 1)], 1), target, driver="gelsd").solution
    w["standardize.mean"], w["standardize.inv_std"] = mean.contiguous(), (1 / std).contiguous()
    w["classifier.0.weight"], w["classifier.0.bias"] = sol[:-1].T.contiguous(), sol[-1].contiguous()
    save_file(w, os.path.join(args.dir, "weights.safetensors"))
    save_file({"images": train[0], "labels": train[1]}, os.path.join(args.dir, "inputs.safetensors"))
    save_file({"images": test[0], "labels": test[1]}, os.path.join(args.dir, "test.safetensors"))
    meta = {"run_id": "selftest-vgg16-random", "conv_keys": keys, "config": {
        "model": {"arch": "vgg16", "input_size": size},
        "pruning": {"step": args.step, "max_rate": 0.9, "min_filters_per_layer": 1},
        "lrp": {"composite": "epsilon-plus", "abs": False, "normalize": "sum"},
        "head": {"hidden": []},
        "data": {"batch_size": args.batch_size}}}
    with open(os.path.join(args.dir, "task.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return {"wrote": args.dir, "conv_keys": keys, "train": len(train[1]), "test": len(test[1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{conv,sweep}")
    c = sub.add_parser("conv", help="F.conv2d throughput on the VGG16 conv shapes")
    c.add_argument("--reps", type=int, default=5)
    c.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    c.add_argument("--precision", choices=["fp32", "tf32"], default="fp32", help="on cuda: cuDNN's math")
    c.add_argument("--sizes", default="32x64,224x8", help="SIZExBATCH,… (default 32x64,224x8)")
    c.add_argument("--cudnn-benchmark", action="store_true", help="on cuda: torch.backends.cudnn.benchmark")
    s = sub.add_parser("sweep", help="the pruning sweep on an `lrprune export` directory")
    s.add_argument("dir")
    s.add_argument("--methods", default="lrp,l1", help="comma-separated: lrp, l1, l2")
    s.add_argument("--check", action="store_true", help="verify compacted == zero-masked network every step")
    t = sub.add_parser("selftest")  # unlisted development aid, see the module docstring
    t.add_argument("dir")
    t.add_argument("--train-per-class", type=int, default=8)
    t.add_argument("--test-per-class", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=10)
    t.add_argument("--step", type=float, default=0.05)
    # Options given before or after the subcommand are both accepted.
    for p in (c, s, t):
        p.add_argument("--threads", type=int, default=argparse.SUPPRESS)
    args = ap.parse_args()

    ensure_deps(("torch",) if args.cmd == "conv" else ("numpy", "safetensors", "torch", "zennit"))
    import torch

    torch.set_num_threads(max(1, args.threads))
    out = {"conv": cmd_conv, "sweep": cmd_sweep, "selftest": cmd_selftest}[args.cmd](args, torch)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
