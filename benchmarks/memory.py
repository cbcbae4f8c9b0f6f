"""Memory of the weights and of the peak activations: float32 network against the int8 model;
with ``--rss``, the measured peak memory and time of whole encodes and decodes.

    python benchmarks/memory.py                       # bundled MSE model, 768x512
    python benchmarks/memory.py --model models/qlic-mse.qlicm --size 1920x1080
    python benchmarks/memory.py --rss 768x512 3840x2160 12000x8400 --repeat 3

Weights: the float32 network holds 4 bytes per parameter of the four transforms (and the
gains); the int8 model holds what its file's arrays take (int8 weights, uint8 GDN gammas,
int32 biases and per-channel multipliers), entropy tables counted apart since a float codec
needs them too. Activations: a layer-by-layer executor holds one layer's input and output at
once; the peak is the largest such pair over the layers of each transform, with float32
everywhere for the float network and the engine's types for the int8 one (8-bit codes between
layers, int16 where a GDN reads or writes 12-bit codes, int16 latents into the synthesis, int32
accumulators only at a transform's end, where the fused requantization cannot apply).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def out_channels(layer, arrays) -> int:
    key = "weight" if layer["op"] in ("conv", "deconv") else "gamma"
    return arrays[f"{layer['name']}.{key}"].shape[0]


def transform_peaks(manifest, arrays, transform, h, w, in_channels, in_bytes):
    """(float32 peak bytes, int8 engine peak bytes) of one transform on an h x w input."""
    peak_float = peak_int = 0
    c = in_channels
    b_in = in_bytes
    for i, layer in enumerate(manifest["transforms"][transform]):
        last = i == len(manifest["transforms"][transform]) - 1
        if layer["op"] == "conv":
            h2, w2 = -(-h // layer["stride"]), -(-w // layer["stride"])
        elif layer["op"] == "deconv":
            h2, w2 = 2 * h, 2 * w
        else:
            h2, w2 = h, w
        c2 = out_channels(layer, arrays)
        out = layer.get("out") or {}
        # Accumulators of the last layer are int32; codes wider than 8 bits (what a GDN reads
        # or writes, up to 12 bits) are int16.
        widest = max(-out.get("lo", 0), out.get("hi", 0), layer.get("out_max", 127))
        b_out = 4 if last else (2 if widest > 127 else 1)
        peak_float = max(peak_float, 4 * (h * w * c + h2 * w2 * c2))
        peak_int = max(peak_int, b_in * h * w * c + b_out * h2 * w2 * c2)
        h, w, c, b_in = h2, w2, c2, b_out
    return peak_float, peak_int


# --------------------------------------------------------------------------- measured memory
#
# ``--rss``: for each size, one child process encodes a photo-like image of that size with
# ``qlic_codec.encode`` and another decodes the stream with ``qlic_codec.decode``; each reports
# its peak resident set size (VmHWM, which Linux resets at exec) just before the measured call
# (interpreter, libraries, model, compiled kernels after a 64x64 warm-up, and the input: the
# RGB array or the stream) and after it, and the call's time (the best of ``--repeat`` calls;
# the peak covers them all). The image is the first PNG of ``../shared/data/train`` beside
# the repository (or ``--photo``), mirrored and tiled to the size, so that large images keep a
# photo's statistics; it travels to the children as a raw ``.npy`` file.


def _vm_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def tiled_photo(photo: Path, width: int, height: int):
    """The photo mirrored about its edges and repeated to ``height x width`` (uint8 RGB)."""
    import numpy as np
    from PIL import Image
    with Image.open(photo) as im:
        tile = np.asarray(im.convert("RGB"))
    tile = np.concatenate([tile, tile[::-1]], axis=0)
    tile = np.concatenate([tile, tile[:, ::-1]], axis=1)
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
    return np.ascontiguousarray(np.tile(tile, reps)[:height, :width])


def child(kind: str, path: str, model: str, repeat: int) -> dict:
    import numpy as np
    import qlic_codec
    warm = qlic_codec.encode(np.full((64, 64, 3), 128, np.uint8), model=model)
    qlic_codec.decode(warm, model)  # compiles or loads every kernel
    if kind == "encode":
        data = np.load(path)
        call = lambda: qlic_codec.encode(data, model=model)  # noqa: E731
    else:
        data = Path(path).read_bytes()
        call = lambda: qlic_codec.decode(data, model)  # noqa: E731
    base = _vm_hwm()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = call()
        best = min(best, time.perf_counter() - t)
    peak = _vm_hwm()
    if kind == "encode":  # the stream for the decode child
        Path(path).with_suffix(".qlic").write_bytes(out)
    return {"base": base, "peak": peak, "seconds": best}


def run_child(kind, path, model, repeat) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(path), model,
           str(repeat)]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        last = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        return {"error": f"{kind} failed ({proc.returncode}): {last[0]}"}
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def measure_rss(sizes, model, photo, repeat) -> int:
    import numpy as np
    mib = 2**20
    print(f"model {Path(model).name}, photo {photo.name}, best of {repeat}\n")
    print("| image | call | peak RSS (MiB) | before the call (MiB) | the call (MiB) | bytes "
          "per pixel | seconds |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            width, height = (int(v) for v in size.split("x"))
            rgb = tiled_photo(photo, width, height)
            image = Path(tmp) / "image.npy"
            np.save(image, rgb)
            del rgb
            res = run_child("encode", image, model, repeat)
            _print_row(size, "encode", res, width * height, mib)
            if "error" not in res:  # the encode child left the stream beside the image
                res = run_child("decode", image.with_suffix(".qlic"), model, repeat)
                _print_row(size, "decode", res, width * height, mib)
    return 0


def _print_row(size, kind, r, pixels, mib):
    if "error" in r:
        print(f"| {size} | {kind} | {r['error']} | | | | |", flush=True)
        return
    call = r["peak"] - r["base"]
    print(f"| {size} | {kind} | {r['peak'] / mib:.0f} | {r['base'] / mib:.0f} | "
          f"{call / mib:.0f} | {call / pixels:.1f} | {r['seconds']:.3f} |", flush=True)


def main(argv=None) -> int:
    if argv is None and sys.argv[1:2] == ["--child"]:
        kind, path, model, repeat = sys.argv[2:6]
        print(json.dumps(child(kind, path, model, int(repeat))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(ROOT / "models" / "qlic-mse.qlicm"))
    p.add_argument("--size", default="768x512")
    p.add_argument("--rss", nargs="+", metavar="WxH",
                   help="measure the peak RSS and time of encoding and decoding these sizes")
    p.add_argument("--photo", type=Path, default=None,
                   help="the photo to tile (default: the first PNG of ../shared/data/train)")
    p.add_argument("--repeat", type=int, default=1, help="calls per child; the best time counts")
    args = p.parse_args(argv)
    if args.rss:
        photo = args.photo or sorted((ROOT.parent / "shared" / "data" / "train").glob("*.png"))[0]
        return measure_rss(args.rss, args.model, photo, args.repeat)
    from qlic_codec import modelfile

    manifest, arrays = modelfile.read(args.model)[:2]
    width, height = (int(v) for v in args.size.split("x"))
    net_int = sum(a.nbytes for k, a in arrays.items() if not k.startswith("entropy."))
    tables = sum(a.nbytes for k, a in arrays.items() if k.startswith("entropy."))
    params = 0
    for layers in manifest["transforms"].values():
        for layer in layers:
            key = "weight" if layer["op"] in ("conv", "deconv") else "gamma"
            # weights (or GDN gamma) plus one bias (or beta) per output channel
            params += arrays[f"{layer['name']}.{key}"].size + out_channels(layer, arrays)
    # the float model's gains: one vector per trained level, not per sub-level of the grid
    trained = (manifest["levels"] - 1) // manifest.get("quality_steps", 1) + 1
    params += trained * manifest["M"]
    net_float = 4 * params

    H, W = -(-height // 64) * 64, -(-width // 64) * 64
    M, N = manifest["M"], manifest["N"]
    peaks = {
        "g_a (encode)": transform_peaks(manifest, arrays, "g_a", H, W, 3, 1),
        "h_a (encode)": transform_peaks(manifest, arrays, "h_a", H // 16, W // 16, M, 1),
        "h_s (both)": transform_peaks(manifest, arrays, "h_s", H // 64, W // 64, N, 2),
        "g_s (decode)": transform_peaks(manifest, arrays, "g_s", H // 16, W // 16, M, 2),
    }

    def mib(b):
        return b / 2**20

    def saving(f, i):
        return f"{100 * (i / f - 1):+.1f}%"

    print(f"model {Path(args.model).name}, {params:,} parameters, image {width}x{height}\n")
    print("| memory | float32 | int8 model | change |")
    print("|---|---|---|---|")
    print(f"| weights (transforms, gains) | {mib(net_float):.2f} MiB | {mib(net_int):.2f} MiB "
          f"| {saving(net_float, net_int)} |")
    for name, (f, i) in peaks.items():
        print(f"| peak activations, {name} | {mib(f):.1f} MiB | {mib(i):.1f} MiB "
              f"| {saving(f, i)} |")
    print(f"\nentropy tables (both codecs need them): {mib(tables):.2f} MiB in the int8 file")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
