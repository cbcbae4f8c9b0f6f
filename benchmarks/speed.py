"""Encode/decode speed of qlic against the same network in PyTorch fp32, in one run.

    python benchmarks/speed.py                       # 768x512, 1 and 2 threads
    python benchmarks/speed.py --sizes 768x512 1920x1080 --threads 1 --repeat 5

qlic times are whole API calls (integer network + entropy coding + container); the PyTorch
times are the network alone (encode: g_a, h_a, h_s; decode: h_s, g_s), fp32, NCHW and
channels_last, so the ratios favour PyTorch. Each figure is the best of ``--repeat`` runs.
Writes a JSON file next to the table (``--json``).
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def photo(height, width):
    from PIL import Image
    val = ROOT.parent / "shared" / "data" / "val"
    files = sorted(val.glob("*.png")) if val.is_dir() else []
    if files:
        im = Image.open(files[0]).convert("RGB").resize((width, height), Image.LANCZOS)
        return np.asarray(im)
    from conftest import synthetic_photo
    return synthetic_photo(height, width, 0)


def torch_model(manifest, checkpoint):
    import torch
    from qlic_codec.train.model import MeanScaleHyperprior
    if checkpoint:
        from qlic_codec.train.checkpoint import load_float_model
        return load_float_model(checkpoint)[0], torch
    # Speed does not depend on the weights: the same architecture, untrained.
    return MeanScaleHyperprior(manifest["N"], manifest["M"], manifest["levels"]).eval(), torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="int8 model name or path (default: bundled)")
    p.add_argument("--float", dest="float_ckpt", default=None,
                   help="float checkpoint for the PyTorch columns (default: same architecture)")
    p.add_argument("--sizes", nargs="+", default=["768x512"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--quality", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "speed.json"))
    args = p.parse_args(argv)

    import numba
    import qlic_codec
    from qlic_codec import api

    loaded = api.load_model(args.model)
    from qlic_codec import modelfile
    manifest = modelfile.read(loaded.path)[0]
    model, torch = torch_model(manifest, args.float_ckpt)

    rows = []
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        image = photo(height, width)
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
        ph, pw = (-height) % 64, (-width) % 64
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
        for threads in args.threads:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            torch.set_num_threads(threads)
            data = qlic_codec.encode(image, args.quality, args.model)  # warm-up + compile
            qlic_codec.decode(data, args.model)
            enc = best_of(lambda: qlic_codec.encode(image, args.quality, args.model), args.repeat)
            dec = best_of(lambda: qlic_codec.decode(data, args.model), args.repeat)
            row = {"size": size, "threads": threads, "qlic_encode_s": enc, "qlic_decode_s": dec,
                   "bytes": len(data)}
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
                    row[f"torch_{fmt_name}_encode_s"] = best_of(encode_net, args.repeat)
                    row[f"torch_{fmt_name}_decode_s"] = best_of(decode_net, args.repeat)
            fastest_enc = min(row["torch_nchw_encode_s"], row["torch_channels_last_encode_s"])
            fastest_dec = min(row["torch_nchw_decode_s"], row["torch_channels_last_decode_s"])
            row["encode_speedup_vs_torch"] = fastest_enc / enc
            row["decode_speedup_vs_torch"] = fastest_dec / dec
            rows.append(row)

    header = (f"{'size':>10} {'thr':>3} {'qlic enc':>9} {'qlic dec':>9} {'torch enc':>10} "
              f"{'torch dec':>10} {'enc x':>6} {'dec x':>6}")
    print(header)
    for r in rows:
        te = min(r["torch_nchw_encode_s"], r["torch_channels_last_encode_s"])
        td = min(r["torch_nchw_decode_s"], r["torch_channels_last_decode_s"])
        print(f"{r['size']:>10} {r['threads']:>3} {r['qlic_encode_s']:9.3f} "
              f"{r['qlic_decode_s']:9.3f} {te:10.3f} {td:10.3f} "
              f"{r['encode_speedup_vs_torch']:6.2f} {r['decode_speedup_vs_torch']:6.2f}")
    print("(seconds, best of %d; 'x' = PyTorch fp32 time / qlic time, >1 means qlic is faster)"
          % args.repeat)
    out = {"machine": {"cpu": platform.processor() or platform.machine(),
                       "cores": os.cpu_count(), "python": platform.python_version()},
           "model": str(loaded.path.name), "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
