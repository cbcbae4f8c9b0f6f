"""Memory of the weights and of the peak activations: float32 network against the int8 model.

    python benchmarks/memory.py                       # bundled MSE model, 768x512
    python benchmarks/memory.py --model models/qlic-mse.qlicm --size 1920x1080

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
import sys
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(ROOT / "models" / "qlic-mse.qlicm"))
    p.add_argument("--size", default="768x512")
    args = p.parse_args(argv)
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
