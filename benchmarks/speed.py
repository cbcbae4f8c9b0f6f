"""Encode/decode speed and decode memory of qlic against the same network in PyTorch fp32 and
against the classic codecs, all measured in one run.

    python benchmarks/speed.py                       # 768x512, 1 and 2 threads
    python benchmarks/speed.py --sizes 768x512 1920x1080 3840x2160 --threads 1 2 --repeat 5
    python benchmarks/speed.py --model PATH.qlicm --codecs jpeg webp --no-memory
    python benchmarks/speed.py --baseline OLD.qlicm --codecs none --no-onnx  # two models, turn about
    QLIC_KERNELS=amx python benchmarks/speed.py --baseline-kernels vnni  # two kernel paths

Images: the first PNG of ``../shared/data/val`` beside the repository, resized (Lanczos) to
each ``--sizes`` WIDTHxHEIGHT (a synthetic photo when that folder is missing).

qlic times are whole API calls (integer network + entropy coding + container); the PyTorch
times are the network alone (encode: g_a, h_a, h_s; decode: h_s, g_s), fp32, NCHW and
channels_last (the faster one counts), so the ratios favour PyTorch. The classic codecs
(``benchmarks/rd.py``'s Pillow / pillow-heif settings, at one mid setting each, see
``CLASSIC_SETTING``) are timed from an RGB array to bytes and from bytes back to an RGB
array; AVIF (libavif) and HEVC decoding (libheif) get the row's thread count, JPEG, WebP and
JPEG 2000 run on one thread in Pillow, x265 picks its own. A codec that is missing is skipped
with a note. Every time is the best of ``--repeat`` runs, and every ratio compares figures of
the same run. qlic and PyTorch take turns (one qlic call, then one PyTorch network, for each
of PyTorch's two memory formats), so that a slow spell of a shared machine falls on both;
qlic's time is the best of its turns with PyTorch's two formats (with ``--baseline``, the
ratios to the baseline come from qlic's turns with the baseline).

ONNX Runtime: the same decoder network (h_s + g_s from the same latents) exported to ONNX
(``onnx_peer.py``, height and width dynamic) and run by ONNX Runtime in fp32 and statically
quantized to int8 with its own tools (``quantize_static``: QDQ, per-channel int8 weights,
uint8 activations calibrated on the latents of ``--calibration-images`` crops of
``--calibration``, the training photos). The int8 graph has the transposed convolutions
written as sub-pixel convolutions (the same function; ONNX Runtime has no int8 transposed
convolution on the CPU). Each graph runs in a child process with the row's intra-op threads
and one inter-op thread; the int8 graph's image is compared with the fp32 graph's (PSNR).
``--no-onnx`` skips it; without onnx and onnxruntime installed it is skipped with a note.

GMAC/s: the multiply-accumulates of the decoder network (h_s + g_s, counted from the layer
shapes of the model file, see ``decoder_macs``) divided by the decode time: for qlic the whole
``decode`` call, for PyTorch the network alone.

Peak memory: a child process (this script, ``--child``) decodes the image once, qlic
(``qlic_codec.decode``) or PyTorch fp32 (h_s + g_s from the latents, the faster memory format
of the run); its maximum resident set size comes from ``/usr/bin/time -f %M`` (or, without GNU
time, from the child's own VmHWM; ``ru_maxrss`` is not used because Linux carries the parent's
peak over fork and exec). ``peak`` is the whole process (interpreter, libraries, model),
``decode`` is the peak minus the child's peak just before the measured decode (after imports,
model loading and a warm-up decode of a 64x64 image). Measured once per size, at the largest
``--threads``.

Decode stages: the same decode split into z entropy decoding, h_s, y entropy decoding (with
the y symbols' count and nanoseconds per symbol) and g_s, each the best of ``--repeat``; for
a channel-conditional model also g_s layer by layer.

Whole process: wall time of ``python -m qlic_codec.cli decode`` writing a PNG, cold (a fresh
``NUMBA_CACHE_DIR``: imports, model loading and compiling every kernel, as on the first run of
a new installation) and warm (the same cache, best of ``--repeat``), and warm again with
``QLIC_MALLOC=system`` (the C allocator's defaults, ``qlic_codec.allocator``), the two warm
runs taking turns; ``--no-process`` skips it.

Writes a JSON file next to the table (``--json``).
"""

import argparse
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"

# One mid setting per classic codec (rd.py's options otherwise).
CLASSIC_SETTING = {"jpeg": 75, "webp": 75, "avif": 60, "hevc444": 50, "jpeg2000": 24}
MIB = 1024 * 1024


def best_of(fn, repeat):
    return interleaved_best([fn], repeat)[0]


def interleaved_best(fns, repeat):
    """Best time of each function, the functions taking turns in every round, so that a busy
    machine's slow spells fall on all of them alike."""
    times = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t)
    return [min(t) for t in times]


def parse_size(text):
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size '{text}' is not WIDTHxHEIGHT") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"size '{text}' must be positive")
    return width, height


def photo(height, width):
    from PIL import Image
    val = ROOT.parent / "shared" / "data" / "val"
    files = sorted(val.glob("*.png")) if val.is_dir() else []
    if files:
        im = Image.open(files[0]).convert("RGB").resize((width, height), Image.LANCZOS)
        return np.asarray(im)
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import synthetic_photo
    return synthetic_photo(height, width, 0)


# --------------------------------------------------------------------------- MAC counting

def _stride_product(layers):
    return math.prod(layer.get("stride", 1) for layer in layers if layer["op"] == "conv")


def _layer_macs(layer, arrays, h, w):
    """(MACs, output height, output width) of one layer on an h x w input."""
    name, op = layer["name"], layer["op"]
    if op in ("gdn", "igdn"):  # 1x1 conv of |x|: H*W*C*C
        c = arrays[f"{name}.gamma"].shape[0]
        return h * w * c * c, h, w
    cout, k, _, cin = arrays[f"{name}.weight"].shape  # (Cout, K, K, Cin)
    s = layer.get("stride", 1)
    if op == "deconv":  # transposed: every input pixel meets K*K taps
        return h * w * k * k * cin * cout, h * s, w * s
    if op == "conv":
        ho, wo = -(-h // s), -(-w // s)
        return ho * wo * k * k * cin * cout, ho, wo
    raise ValueError(f"{name}: unknown op '{op}'")


def decoder_macs(manifest, arrays, height, width):
    """Multiply-accumulates of the decoder network (h_s, then g_s) for a height x width image,
    as a list of (layer name, MACs).

    The image is padded to the analysis block (the product of the g_a and h_a strides);
    h_s starts from z, g_s from y. conv: Ho*Wo*K*K*Cin*Cout; transposed conv (5x5/2):
    Hin*Win*K*K*Cin*Cout; GDN / inverse GDN (a 1x1 conv): H*W*C*C. ``arrays`` only needs the
    shapes of the weights (``<layer>.weight``, (Cout, K, K, Cin)) and ``<layer>.gamma`` (C, C).
    """
    t = manifest["transforms"]
    down_y = _stride_product(t["g_a"])
    block = down_y * _stride_product(t["h_a"])
    ph, pw = -(-height // block) * block, -(-width // block) * block
    out = []
    for part, (h, w) in (("h_s", (ph // block, pw // block)),
                         ("g_s", (ph // down_y, pw // down_y))):
        for layer in t[part]:
            macs, h, w = _layer_macs(layer, arrays, h, w)
            out.append((layer["name"], macs))
    return out


# --------------------------------------------------------------------------- child processes

def _self_maxrss():
    """This process's peak resident set size in bytes: VmHWM, which Linux resets at exec
    (``ru_maxrss`` keeps the parent's peak across fork and exec, so it can only be a fallback).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux: KiB


def _gnu_time():
    time_bin = Path("/usr/bin/time")
    if not time_bin.exists():
        return None
    try:
        ok = subprocess.run([str(time_bin), "-f", "%M", "true"], capture_output=True,
                            timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return str(time_bin) if ok else None


def child_qlic(stream, warm, model, threads):
    import numba
    import qlic_codec
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    qlic_codec.decode(Path(warm).read_bytes(), model)  # loads the kernels
    data = Path(stream).read_bytes()
    base = _self_maxrss()
    t = time.perf_counter()
    pixels = qlic_codec.decode(data, model)
    return {"base": base, "seconds": time.perf_counter() - t, "shape": list(pixels.shape),
            "peak_self": _self_maxrss()}


def child_torch(n, m, levels, zh, zw, threads, channels_last):
    import torch
    from qlic_codec.train.model import MeanScaleHyperprior
    torch.set_num_threads(threads)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = MeanScaleHyperprior(n, m, levels).eval().to(memory_format=fmt)
    gen = torch.Generator().manual_seed(0)

    def latents(h, w):
        z = torch.round(2 * torch.randn(1, n, h, w, generator=gen))
        y = torch.round(4 * torch.randn(1, m, 4 * h, 4 * w, generator=gen))
        return z.contiguous(memory_format=fmt), y.contiguous(memory_format=fmt)

    with torch.no_grad():
        z, y = latents(1, 1)
        model.h_s(z), model.g_s(y)  # warm-up, 64x64
        del z, y
        base = _self_maxrss()
        t = time.perf_counter()
        z, y = latents(zh, zw)
        model.h_s(z)
        x = model.g_s(y)
    return {"base": base, "seconds": time.perf_counter() - t, "shape": list(x.shape),
            "peak_self": _self_maxrss()}


def child_onnx(graph, latents, out, threads, repeat):
    import onnx_peer
    with np.load(latents) as f:
        inputs = {"z_hat": f["z_hat"], "y_hat": f["y_hat"]}
    seconds, outputs = onnx_peer.run_session(graph, inputs, threads, repeat)
    np.save(out, outputs[1])  # x_hat, for the int8 graph's PSNR against the fp32 one
    return {"seconds": seconds}


def onnx_graphs(model, level, folder, count, tmp):
    """Paths of the fp32 and int8 ONNX decoders of ``model`` in ``tmp``: (fp32, int8).

    fp32 is the network as exported; int8 is ``onnx_peer.with_phase_deconvs`` of it (the same
    function, its transposed convolutions as sub-pixel convolutions, which ONNX Runtime runs
    in int8) quantized by ``quantize_static`` on the latents of ``count`` training crops."""
    sys.path.insert(0, str(HERE))
    import onnx_peer
    import torch
    calibration = onnx_peer.latents(model, onnx_peer.calibration_crops(folder, count), level)
    z, y = (torch.from_numpy(a) for a in calibration[0])
    fp32 = onnx_peer.export_decoder(model, Path(tmp) / "decoder-fp32.onnx", z, y)
    phases = onnx_peer.export_decoder(onnx_peer.with_phase_deconvs(model),
                                      Path(tmp) / "decoder-phases.onnx", z, y)
    int8 = onnx_peer.quantize_decoder(phases, Path(tmp) / "decoder-int8.onnx", calibration)
    return fp32, int8


def time_onnx(graphs, z_hat, y_hat, threads, repeat, tmp):
    """{onnx_fp32_decode_s, onnx_int8_decode_s, onnx_int8_psnr_vs_fp32_db}: each graph in a
    child process (``--child onnx``) with ``threads`` intra-op threads, or a note."""
    sys.path.insert(0, str(HERE))
    import onnx_peer
    latents = Path(tmp) / "latents.npz"
    np.savez(latents, z_hat=z_hat, y_hat=y_hat)
    out, images = {}, {}
    for name, graph in zip(("fp32", "int8"), graphs):
        x_path = Path(tmp) / f"x_hat-{name}.npy"
        r, why = run_child(["onnx", graph, latents, x_path, threads, repeat])
        if why:
            note(f"onnx {name}: {why}")
            return out
        out[f"onnx_{name}_decode_s"] = r["seconds"]
        images[name] = np.load(x_path)
    out["onnx_int8_psnr_vs_fp32_db"] = onnx_peer.psnr(images["int8"], images["fp32"])
    return out


def run_child(args):
    """Run this script with ``--child args``: its result plus its peak RSS in bytes (``peak``,
    from ``/usr/bin/time -f %M`` when GNU time is there, else the child's own VmHWM), or a
    note."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *map(str, args)]
    time_bin = _gnu_time()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "maxrss"
        if time_bin:
            cmd = [time_bin, "-f", "%M", "-o", str(report), *cmd]
        proc = subprocess.run(cmd, capture_output=True)
        if proc.returncode != 0:
            last = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            return None, f"child {args[0]} failed ({proc.returncode}): {last[0]}"
        result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        if time_bin:
            result["peak"] = int(report.read_text().split()[-1]) * 1024  # KiB
            result["peak_from"] = "/usr/bin/time"
        else:
            result["peak"] = result["peak_self"]
            result["peak_from"] = "VmHWM"
    return result, None


def child_main(argv):
    kind, rest = argv[0], argv[1:]
    if kind == "qlic":
        stream, warm, model, threads = rest
        result = child_qlic(stream, warm, model, int(threads))
    elif kind == "torch":
        n, m, levels, zh, zw, threads, cl = (int(v) for v in rest)
        result = child_torch(n, m, levels, zh, zw, threads, bool(cl))
    elif kind == "onnx":
        graph, latents, out, threads, repeat = rest
        result = child_onnx(graph, latents, out, int(threads), int(repeat))
    else:
        raise SystemExit(f"unknown child '{kind}'")
    print(json.dumps(result), flush=True)
    return 0


def decode_stages(model_path, data, repeat):
    """Seconds of each stage of one decode, best of ``repeat``: the z and y entropy decoding
    (constriction, grouped by table, no Python loop per symbol), h_s and g_s (with the
    fixed-point reconstruction of y)."""
    from qlic_codec import api, container

    m = api.load_model(model_path)
    header, (z_stream, y_stream) = container.parse(data)
    level = api._check_quality_stream(header, m)  # a sub-level of quality steps, not quality - 1
    # The stages of ``api._decode_streams``, each timed on its own inputs.
    z = api.decode_z_stream(m, header, z_stream)
    if m.network.cc is not None:
        return _slice_decode_stages(m, header, level, z, z_stream, y_stream, repeat)
    mean_g, index = m.network.hyper_synthesis(z, level)
    y_sym = api.decode_y_stream(m, y_stream, index)
    out = {
        "z_entropy_s": best_of(lambda: api.decode_z_stream(m, header, z_stream), repeat),
        "h_s_s": best_of(lambda: m.network.hyper_synthesis(z, level), repeat),
        "y_entropy_s": best_of(lambda: api.decode_y_stream(m, y_stream, index), repeat),
        "g_s_s": best_of(lambda: m.network.synthesis(m.network.reconstruct(y_sym, mean_g), level),
                         repeat),
        "y_symbols": int(index.size), "z_symbols": int(z.size),
    }
    out["y_entropy_ns_per_symbol"] = 1e9 * out["y_entropy_s"] / out["y_symbols"]
    return out


def _slice_decode_stages(m, header, level, z, z_stream, y_stream, repeat):
    """``decode_stages`` of a channel-conditional model: h_s (with the heads that split its
    output into the slices' inputs), then the slices one after another (each slice's
    networks, its symbols, its residual), of which the symbols' range decoding alone is
    ``y_symbols_s``; and g_s."""
    from qlic_codec import api, slicecoding
    from qlic_codec.entropy import coder

    net = m.network

    class TimedReader(coder.SegmentDecoder):
        seconds = 0.0

        def decode(self, indexes):
            start = time.perf_counter()
            try:
                return super().decode(indexes)
            finally:
                TimedReader.seconds += time.perf_counter() - start

    slices, symbols = [], []
    for _ in range(repeat):
        state = net.cc.start_from_z(z, level)
        TimedReader.seconds = 0.0
        start = time.perf_counter()
        y_g = slicecoding.decode_slices(net, TimedReader(y_stream, m.y_tables), state)
        slices.append(time.perf_counter() - start)
        symbols.append(TimedReader.seconds)
    out = {
        "z_entropy_s": best_of(lambda: api.decode_z_stream(m, header, z_stream), repeat),
        "h_s_s": best_of(lambda: net.cc.start_from_z(z, level), repeat),
        "y_slices_s": min(slices),
        "y_symbols_s": min(symbols),
        "g_s_s": best_of(lambda: net.synthesis(y_g, level), repeat),
        "g_s_layers_s": layer_times(net, lambda: net.synthesis(y_g, level), repeat),
        "y_symbols": int(y_g.size), "z_symbols": int(z.size),
    }
    out["y_entropy_ns_per_symbol"] = 1e9 * out["y_symbols_s"] / out["y_symbols"]
    return out


def layer_times(net, run, repeat):
    """Seconds of each layer over one ``run()`` (all its bands), best of ``repeat`` per layer:
    the network's layer runner is wrapped on this instance only, for these runs."""
    best = {}
    for _ in range(repeat):
        spent = {}
        depth = [0]  # a step that runs its layers one by one is timed as the step alone

        def timer(method):
            def timed(layer, *args, **kw):
                # ``kw``: ``out`` where a band's join writes the layer's codes in place.
                start = time.perf_counter()
                depth[0] += 1
                try:
                    return method(net, layer, *args, **kw)
                finally:
                    depth[0] -= 1
                    if depth[0] == 0:
                        spent[layer["name"]] = spent.get(layer["name"], 0.0) + \
                            time.perf_counter() - start
            return timed

        # A band's join (``_run_layer_joined``) runs its step too.
        net._run_layer = timer(type(net)._run_layer)
        net._run_layer_joined = timer(type(net)._run_layer_joined)
        try:
            run()
        finally:
            del net._run_layer, net._run_layer_joined
        for name, seconds in spent.items():
            best[name] = min(best.get(name, seconds), seconds)
    return best


def process_times(model_path, data, threads, repeat, tmp):
    """Wall time of a whole ``qlic decode`` process: ``cold`` with an empty kernel cache (the
    first run of a new installation: imports, model loading, Numba compilation), ``warm``
    (best of ``repeat``) once that cache is filled, and ``warm_system`` the same with the C
    allocator's defaults (``QLIC_MALLOC=system``), taking turns with ``warm``."""
    stream = Path(tmp) / "in.qlic"
    stream.write_bytes(data)
    cache = Path(tmp) / f"numba-cache-{threads}"  # a fresh one per call: cold is cold
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "NUMBA_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "qlic_codec.cli", "decode", str(stream), "-o",
           str(Path(tmp) / "out.png"), "--model", str(model_path)]

    def run(extra=None):
        (Path(tmp) / "out.png").unlink(missing_ok=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, env={**env, **(extra or {})}, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.decode(errors="replace").strip()[-300:])
        return time.perf_counter() - t

    cold = run()
    pairs = [(run(), run({"QLIC_MALLOC": "system"})) for _ in range(repeat)]
    warm, system = [a for a, _ in pairs], [b for _, b in pairs]
    # The allocator's cost comes and goes with the kernel's supply of huge pages: the
    # medians show it where the best of a few runs may not.
    return {"threads": threads, "cold_s": cold, "warm_s": min(warm),
            "warm_system_s": min(system), "warm_median_s": float(np.median(warm)),
            "warm_system_median_s": float(np.median(system)), "warm_runs_s": warm,
            "warm_system_runs_s": system}


# --------------------------------------------------------------------------- classic codecs

def classic_codecs(names):
    """{name: spec} of rd.py's codecs that work here (a note on stderr for the others)."""
    if not names:
        return {}
    sys.path.insert(0, str(HERE))
    from rd import CLASSIC, available_classic
    unknown = [n for n in names if n not in CLASSIC]
    if unknown:
        raise SystemExit(f"unknown codec(s): {', '.join(unknown)} (choose from {list(CLASSIC)})")
    return available_classic(names)


def set_codec_threads(threads):
    try:
        from PIL import AvifImagePlugin
        AvifImagePlugin.DEFAULT_MAX_THREADS = threads
    except ImportError:
        pass
    try:
        import pillow_heif
        pillow_heif.options.DECODE_THREADS = threads
    except ImportError:
        pass


def time_classic(spec, setting, rgb, repeat):
    from PIL import Image
    options = spec["save"](setting)

    def encode():
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, **options)
        return buf.getvalue()

    data = encode()

    def decode():
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))

    if decode().shape != rgb.shape:
        raise RuntimeError("decoded shape differs")
    return {"setting": setting, "bytes": len(data), "encode_s": best_of(encode, repeat),
            "decode_s": best_of(decode, repeat)}


# --------------------------------------------------------------------------- main

def default_float(model_path):
    """The float checkpoint beside the bundled model, ``models/<name>-float.pt``, if any."""
    candidate = ROOT / "models" / f"{Path(model_path).stem}-float.pt"
    return str(candidate) if candidate.is_file() else None


def onnx_available():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def torch_model(manifest, checkpoint):
    import torch
    from qlic_codec.train.model import MeanScaleHyperprior
    if checkpoint:
        from qlic_codec.train.checkpoint import load_float_model
        return load_float_model(checkpoint)[0], torch
    # Speed does not depend on the weights: the same architecture, untrained.
    return MeanScaleHyperprior(manifest["N"], manifest["M"], manifest["levels"]).eval(), torch


def note(msg):
    print(f"note: {msg}", file=sys.stderr, flush=True)


def measure_memory(manifest, model_path, data, warm_data, height, width, threads, channels_last,
                   tmp):
    stream, warm = Path(tmp) / "image.qlic", Path(tmp) / "warm.qlic"
    stream.write_bytes(data)
    warm.write_bytes(warm_data)
    row = {"size": f"{width}x{height}", "threads": threads,
           "torch_format": "channels_last" if channels_last else "nchw"}
    q, why = run_child(["qlic", stream, warm, model_path, threads])
    if why:
        note(f"qlic memory: {why}")
    block = _stride_product(manifest["transforms"]["g_a"]) * \
        _stride_product(manifest["transforms"]["h_a"])
    t, why_t = run_child(["torch", manifest["N"], manifest["M"], manifest["levels"],
                          -(-height // block), -(-width // block), threads, int(channels_last)])
    if why_t:
        note(f"torch memory: {why_t}")
    row["rss_from"] = (q or t or {}).get("peak_from")
    for key, r in (("qlic", q), ("torch", t)):
        row[f"{key}_peak_rss_mib"] = r["peak"] / MIB if r else None
        row[f"{key}_decode_rss_mib"] = (r["peak"] - r["base"]) / MIB if r else None
    if q and t:
        row["peak_ratio_torch_over_qlic"] = t["peak"] / q["peak"]
        row["decode_ratio_torch_over_qlic"] = (t["peak"] - t["base"]) / max(
            q["peak"] - q["base"], 1)
    return row


def print_stages(rows, key, title, repeat):
    """The decode stages of ``rows[i][key]`` (``decode_stages``) and g_s layer by layer."""
    print(f"\n{title}, seconds, best of {repeat} each")
    print(f"{'size':>10} {'thr':>3} {'z entropy':>10} {'h_s':>7} {'y entropy':>10} {'g_s':>7} "
          f"{'y symbols':>10} {'ns/symbol':>10}")
    for r in rows:
        d = r[key]
        if "y_slices_s" in d:  # channel-conditional: slice networks and symbols interleave
            print(f"{r['size']:>10} {r['threads']:>3} {d['z_entropy_s']:10.4f} {d['h_s_s']:7.3f} "
                  f"{d['y_slices_s']:10.4f} {d['g_s_s']:7.3f} {d['y_symbols']:10d} "
                  f"{d['y_entropy_ns_per_symbol']:10.1f}")
            continue
        print(f"{r['size']:>10} {r['threads']:>3} {d['z_entropy_s']:10.4f} {d['h_s_s']:7.3f} "
              f"{d['y_entropy_s']:10.4f} {d['g_s_s']:7.3f} {d['y_symbols']:10d} "
              f"{d['y_entropy_ns_per_symbol']:10.1f}")
    print("(y entropy: range decoding of every y symbol with its table, escapes included; with "
          "a channel-conditional model, the slices' networks, symbols and residuals together, "
          "h_s with the heads that hand its output to the slices, and ns/symbol the range "
          "decoding alone)")
    layered = [r for r in rows if r[key].get("g_s_layers_s")]
    if layered:
        names = list(layered[0][key]["g_s_layers_s"])
        print(f"\n{title}: g_s by layer, milliseconds over all bands, best of "
              f"{repeat} each")
        # A step of two layers run as one (a transposed convolution and its inverse GDN) is
        # named after both.
        widths = [max(7, len(n)) for n in names]
        print(f"{'size':>10} {'thr':>3} " + " ".join(f"{n:>{w}}" for n, w in zip(names, widths)))
        for r in layered:
            t = r[key]["g_s_layers_s"]
            print(f"{r['size']:>10} {r['threads']:>3} " +
                  " ".join(f"{1e3 * t.get(n, 0.0):{w}.1f}" for n, w in zip(names, widths)))


def print_tables(rows, classic_rows, memory, processes, repeat, quality):
    print(f"\nqlic (quality {quality}) against the same network in PyTorch fp32; seconds, best "
          f"of {repeat}")
    print(f"{'size':>10} {'thr':>3} {'bpp':>6} {'qlic enc':>9} {'qlic dec':>9} {'torch enc':>10} "
          f"{'torch dec':>10} {'enc x':>6} {'dec x':>6} {'GMAC':>6} {'qlic GMAC/s':>12} "
          f"{'torch GMAC/s':>13}")
    for r in rows:
        print(f"{r['size']:>10} {r['threads']:>3} {r['bpp']:6.3f} {r['qlic_encode_s']:9.3f} "
              f"{r['qlic_decode_s']:9.3f} {r['torch_encode_s']:10.3f} {r['torch_decode_s']:10.3f} "
              f"{r['encode_speedup_vs_torch']:6.2f} {r['decode_speedup_vs_torch']:6.2f} "
              f"{r['decoder_gmac']:6.1f} {r['qlic_decode_gmacs']:12.1f} "
              f"{r['torch_decode_gmacs']:13.1f}")
    print("('x' = PyTorch time / qlic time, >1: qlic is faster; GMAC of h_s + g_s; qlic GMAC/s "
          "over the whole decode call, PyTorch over the network alone)")
    onnx_rows = [r for r in rows if "onnx_int8_decode_s" in r]
    if onnx_rows:
        print(f"\nqlic decode against the same decoder network (h_s + g_s) in ONNX Runtime; "
              f"seconds, best of {repeat}")
        print(f"{'size':>10} {'thr':>3} {'qlic dec':>9} {'ort fp32':>9} {'ort int8':>9} "
              f"{'x fp32':>7} {'x int8':>7} {'int8 PSNR':>10}")
        for r in onnx_rows:
            print(f"{r['size']:>10} {r['threads']:>3} {r['qlic_decode_s']:9.3f} "
                  f"{r['onnx_fp32_decode_s']:9.3f} {r['onnx_int8_decode_s']:9.3f} "
                  f"{r['decode_speedup_vs_onnx_fp32']:7.2f} "
                  f"{r['decode_speedup_vs_onnx_int8']:7.2f} "
                  f"{r['onnx_int8_psnr_vs_fp32_db']:10.2f}")
        print("('x' = ONNX Runtime time / qlic time, >1: qlic is faster; network alone for ONNX "
              "Runtime, whole decode call for qlic; int8 PSNR: its image against the fp32 "
              "graph's, dB)")
    print_stages(rows, "decode_stages", "qlic decode by stage", repeat)
    if processes:
        print(f"\nwhole 'qlic decode' process (PNG written), seconds; cold = empty kernel "
              f"cache, warm = best of {repeat} (and median), system = warm with "
              "QLIC_MALLOC=system, taking turns")
        print(f"{'size':>10} {'thr':>3} {'cold':>7} {'warm':>7} {'system':>7} {'warm med':>9} "
              f"{'sys med':>8}")
        for r in processes:
            print(f"{r['size']:>10} {r['threads']:>3} {r['cold_s']:7.2f} {r['warm_s']:7.2f} "
                  f"{r['warm_system_s']:7.2f} {r['warm_median_s']:9.2f} "
                  f"{r['warm_system_median_s']:8.2f}")
    if classic_rows:
        print(f"\nclassic codecs, seconds, best of {repeat}; 'x' = codec time / qlic time "
              "(>1: qlic is faster)")
        print(f"{'size':>10} {'thr':>3} {'codec':<9} {'setting':>7} {'bpp':>6} {'encode':>8} "
              f"{'decode':>8} {'enc x':>7} {'dec x':>7}")
        for r in classic_rows:
            print(f"{r['size']:>10} {r['threads']:>3} {r['codec']:<9} {r['setting']:>7} "
                  f"{r['bpp']:6.3f} {r['encode_s']:8.3f} {r['decode_s']:8.3f} "
                  f"{r['encode_x']:7.2f} {r['decode_x']:7.2f}")
    if memory:
        print("\npeak memory of one decode (child process, max RSS, MiB); 'decode' = peak minus "
              "the RSS before decoding")

        def f(v, spec):
            return format(v, spec) if v is not None else format("n/a", spec[:-2] + "s")
        print(f"{'size':>10} {'thr':>3} {'qlic peak':>10} {'decode':>8} {'torch peak':>11} "
              f"{'decode':>8} {'peak x':>7} {'decode x':>9}")
        for r in memory:
            print(f"{r['size']:>10} {r['threads']:>3} {f(r['qlic_peak_rss_mib'], '10.1f')} "
                  f"{f(r['qlic_decode_rss_mib'], '8.1f')} {f(r['torch_peak_rss_mib'], '11.1f')} "
                  f"{f(r['torch_decode_rss_mib'], '8.1f')} "
                  f"{f(r.get('peak_ratio_torch_over_qlic'), '7.2f')} "
                  f"{f(r.get('decode_ratio_torch_over_qlic'), '9.2f')}")
        print("('x' = PyTorch fp32 / qlic, >1: qlic uses less)")


def print_baseline(rows, name, repeat):
    print(f"\nqlic against the baseline {name}, the same image, turn about; seconds, best "
          f"of {repeat}")
    print(f"{'size':>10} {'thr':>3} {'bpp':>6} {'base bpp':>8} {'enc':>7} {'base enc':>9} "
          f"{'dec':>7} {'base dec':>9} {'enc/base':>9} {'dec/base':>9}")
    for r in rows:
        print(f"{r['size']:>10} {r['threads']:>3} {r['bpp']:6.3f} {r['baseline_bpp']:8.3f} "
              f"{r['qlic_encode_turns_s']:7.3f} {r['baseline_encode_s']:9.3f} "
              f"{r['qlic_decode_turns_s']:7.3f} {r['baseline_decode_s']:9.3f} "
              f"{r['encode_vs_baseline']:9.2f} {r['decode_vs_baseline']:9.2f}")
    print("(time of --model / time of the baseline: below 1, --model is faster)")
    if any("baseline_decode_stages" in r for r in rows):
        print_stages(rows, "baseline_decode_stages", f"the baseline {name} by stage", repeat)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        return child_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="int8 model name or path (default: bundled)")
    p.add_argument("--float", dest="float_ckpt", default=None,
                   help="float checkpoint for the PyTorch and ONNX columns (default: the "
                        "model's models/<name>-float.pt, else the same architecture untrained)")
    p.add_argument("--sizes", nargs="+", type=parse_size, default=[(768, 512)],
                   metavar="WxH", help="image sizes, e.g. 768x512 1920x1080 (default 768x512)")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--quality", type=int, default=None,
                   help="quality level (default: the codec's default)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--codecs", nargs="*", default=list(CLASSIC_SETTING),
                   help="classic codecs to time (default: %(default)s; none: no codec)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    p.add_argument("--no-process", action="store_true",
                   help="skip the cold and warm whole-process decode times")
    p.add_argument("--no-onnx", action="store_true",
                   help="skip the ONNX Runtime fp32 and int8 columns")
    p.add_argument("--calibration", default=str(ROOT.parent / "shared" / "data" / "train"),
                   help="PNG folder whose crops calibrate the ONNX int8 graph (default: "
                        "../shared/data/train)")
    p.add_argument("--calibration-images", type=int, default=8,
                   help="calibration crops (256x256, one per image; default 8)")
    p.add_argument("--baseline", default=None,
                   help="a second int8 model (name or path) whose encode and decode are timed "
                        "beside --model's on the same image, turn about")
    p.add_argument("--baseline-kernels", default=None, metavar="PATH",
                   choices=["portable", "avx2", "vnni", "amx"],
                   help="the kernel path of the baseline (default: the active one): with no "
                        "--baseline, the same model on this path, timed turn about with "
                        "--model on the active path (QLIC_KERNELS), its stages too")
    p.add_argument("--json", default=str(HERE / "results" / "speed.json"))
    args = p.parse_args(argv)
    settings = dict(CLASSIC_SETTING)
    codecs = classic_codecs([c for c in args.codecs if c != "none"])
    for name in codecs:
        settings.setdefault(name, codecs[name]["values"][len(codecs[name]["values"]) // 2])

    import numba
    import qlic_codec
    from qlic_codec import api, modelfile
    if args.quality is None:
        args.quality = api.DEFAULT_QUALITY

    loaded = api.load_model(args.model)
    model_path = str(loaded.path)
    baseline_path = str(api.load_model(args.baseline).path) if args.baseline else None
    from qlic_codec.engine import kernels
    base_kernels = args.baseline_kernels
    if base_kernels is not None and base_kernels not in kernels.available_paths():
        p.error(f"--baseline-kernels {base_kernels}: this CPU has {kernels.available_paths()}")
    if base_kernels is not None and baseline_path is None:
        baseline_path = model_path
    baseline_name = None
    if baseline_path is not None:
        baseline_name = Path(baseline_path).name + (
            f" on the {base_kernels} kernel path (--model on {kernels.active_path()})"
            if base_kernels else "")

    def on_base(fn):
        # fn on the baseline's kernel path, the active path restored after each call.
        if base_kernels is None:
            return fn

        def run(*a):
            with kernels.use_path(base_kernels):
                return fn(*a)
        return run
    manifest, arrays, _ = modelfile.read(loaded.path)
    if args.float_ckpt is None:
        args.float_ckpt = default_float(model_path)
    model, torch = torch_model(manifest, args.float_ckpt)
    use_onnx = not args.no_onnx and onnx_available()
    if not args.no_onnx and not use_onnx:
        note("onnx or onnxruntime is not installed: no ONNX columns (pip install -e '.[bench]')")
    onnx_tmp = tempfile.TemporaryDirectory()
    graphs = (onnx_graphs(model.to(memory_format=torch.contiguous_format), args.quality - 1,
                          args.calibration, args.calibration_images, onnx_tmp.name)
              if use_onnx else None)

    rows, classic_rows, memory, processes = [], [], [], []
    for width, height in args.sizes:
        size = f"{width}x{height}"
        image = photo(height, width)
        macs = sum(m for _, m in decoder_macs(manifest, arrays, height, width))
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
        ph, pw = (-height) % 64, (-width) % 64
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
        for threads in args.threads:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            torch.set_num_threads(threads)
            set_codec_threads(threads)
            data = qlic_codec.encode(image, args.quality, model_path)  # warm-up + compile
            qlic_codec.decode(data, model_path)
            row = {"size": size, "threads": threads}

            def qlic_encode():
                qlic_codec.encode(image, args.quality, model_path)

            def qlic_decode():
                qlic_codec.decode(data, model_path)

            enc = dec = float("inf")  # the best of qlic's turns with PyTorch
            if baseline_path is not None:
                base = on_base(lambda: qlic_codec.encode(image, args.quality, baseline_path))()
                on_base(lambda: qlic_codec.decode(base, baseline_path))()
                enc_turns, base_enc = interleaved_best(
                    [qlic_encode,
                     on_base(lambda: qlic_codec.encode(image, args.quality, baseline_path))],
                    args.repeat)
                dec_turns, base_dec = interleaved_best(
                    [qlic_decode, on_base(lambda: qlic_codec.decode(base, baseline_path))],
                    args.repeat)
                if base_kernels is not None:
                    row["baseline_decode_stages"] = on_base(decode_stages)(
                        baseline_path, base, args.repeat)
                row.update(baseline_encode_s=base_enc, baseline_decode_s=base_dec,
                           qlic_encode_turns_s=enc_turns, qlic_decode_turns_s=dec_turns,
                           baseline_bpp=8 * len(base) / (width * height))
            level = torch.tensor([float(args.quality - 1)])
            with torch.no_grad():
                for fmt_name, fmt in (("nchw", torch.contiguous_format),
                                      ("channels_last", torch.channels_last)):
                    m = model.to(memory_format=fmt)
                    xf = x.contiguous(memory_format=fmt)
                    y = m.g_a(xf)
                    z_hat = torch.round(m.h_a(y))
                    gain = m.gains(level)[:, :, None, None]
                    y_hat = torch.round(y * gain) / gain

                    def encode_net():
                        yy = m.g_a(xf)
                        torch.round(m.h_a(yy))
                        m.h_s(z_hat)

                    def decode_net():
                        m.h_s(z_hat)
                        m.g_s(y_hat)

                    encode_net(), decode_net()
                    if fmt_name == "nchw":  # the ONNX graphs' inputs: the same latents
                        onnx_inputs = (z_hat.numpy().copy(), y_hat.numpy().copy())
                    # qlic and PyTorch take turns, so that a slow spell of the machine falls
                    # on both: PyTorch's time moved by 20% from run to run on a shared one.
                    q_enc, t_enc = interleaved_best([qlic_encode, encode_net], args.repeat)
                    q_dec, t_dec = interleaved_best([qlic_decode, decode_net], args.repeat)
                    row[f"torch_{fmt_name}_encode_s"] = t_enc
                    row[f"torch_{fmt_name}_decode_s"] = t_dec
                    enc, dec = min(enc, q_enc), min(dec, q_dec)
            row.update({"qlic_encode_s": enc, "qlic_decode_s": dec,
                        "bytes": len(data), "bpp": 8 * len(data) / (width * height),
                        "decoder_gmac": macs / 1e9})
            if baseline_path is not None:  # of the turns with the baseline
                row.update(decode_vs_baseline=dec_turns / base_dec,
                           encode_vs_baseline=enc_turns / base_enc)
            row["torch_encode_s"] = min(row["torch_nchw_encode_s"],
                                        row["torch_channels_last_encode_s"])
            row["torch_decode_s"] = min(row["torch_nchw_decode_s"],
                                        row["torch_channels_last_decode_s"])
            row["encode_speedup_vs_torch"] = row["torch_encode_s"] / enc
            row["decode_speedup_vs_torch"] = row["torch_decode_s"] / dec
            row["qlic_decode_gmacs"] = macs / dec / 1e9
            row["decode_stages"] = decode_stages(model_path, data, args.repeat)
            row["torch_decode_gmacs"] = macs / row["torch_decode_s"] / 1e9
            if graphs:
                row.update(time_onnx(graphs, *onnx_inputs, threads, args.repeat, onnx_tmp.name))
                for name in ("fp32", "int8"):
                    if f"onnx_{name}_decode_s" in row:
                        row[f"decode_speedup_vs_onnx_{name}"] = row[f"onnx_{name}_decode_s"] / dec
            rows.append(row)
            print(f"{size}, {threads} thread(s): qlic decode {dec:.3f} s", file=sys.stderr,
                  flush=True)
            for name, spec in codecs.items():
                try:
                    c = time_classic(spec, settings[name], image, args.repeat)
                except Exception as exc:  # a codec that fails here is left out, never fatal
                    note(f"{name} at {size}: {type(exc).__name__}: {exc}")
                    continue
                c.update(size=size, threads=threads, codec=name,
                         bpp=8 * c["bytes"] / (width * height),
                         encode_x=c["encode_s"] / enc, decode_x=c["decode_s"] / dec)
                classic_rows.append(c)
        if not args.no_process:
            with tempfile.TemporaryDirectory() as tmp:
                for threads in args.threads:
                    try:
                        t = process_times(model_path, data, threads, args.repeat, tmp)
                    except RuntimeError as exc:
                        note(f"qlic decode process at {size}: {exc}")
                        continue
                    processes.append({"size": size, **t})
        if not args.no_memory:
            threads = max(args.threads)
            last = rows[-1]
            cl = last["torch_channels_last_decode_s"] <= last["torch_nchw_decode_s"]
            warm = qlic_codec.encode(image[:64, :64].copy(), args.quality, model_path)
            with tempfile.TemporaryDirectory() as tmp:
                memory.append(measure_memory(manifest, model_path, data, warm, height, width,
                                             threads, cl, tmp))

    onnx_tmp.cleanup()
    print_tables(rows, classic_rows, memory, processes, args.repeat, args.quality)
    if baseline_path:
        print_baseline(rows, baseline_name, args.repeat)
    out = {"machine": {"cpu": platform.processor() or platform.machine(),
                       "cores": os.cpu_count(), "python": platform.python_version()},
           "model": str(loaded.path.name), "quality": args.quality, "repeat": args.repeat,
           "baseline": Path(baseline_path).name if baseline_path else None,
           "kernels": kernels.active_path(), "baseline_kernels": base_kernels,
           "float": Path(args.float_ckpt).name if args.float_ckpt else None,
           "rows": rows, "classic": classic_rows, "memory": memory,
           "process": processes}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
