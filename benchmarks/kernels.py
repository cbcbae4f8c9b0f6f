"""Throughput (GMAC/s) of the engine's kernels on the layer shapes of the real network, against
PyTorch fp32 (NCHW and channels_last) at the same thread count, measured in the same run.

    python benchmarks/kernels.py            # 1 thread
    python benchmarks/kernels.py --threads 1 2
    python benchmarks/kernels.py --quick    # fewer repetitions

Ours run the fused requantizing kernels (pre-packed weights) once per multiply path of this
host, each layer on its own; the decoder runs each transposed convolution of 8-bit codes with
the inverse GDN after it as one step, timed in the "one step" rows (not in the g_s total).
MACs count the real multiplies of the layer (for the transposed convolution: input pixels x
Cin x Cout x 25). The last rows sum the layers of the synthesis transform g_s (4 transposed
convolutions and 3 inverse GDNs). Timings are the best of several runs; on a shared machine
compare only columns of the same run.
"""

import argparse
import time

import numba
import numpy as np

from qlic_codec.engine import kernels

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is optional here
    torch = None

# (name, op, (W, H) of the input, Cin, Cout, K, stride, input dtype, in g_s), with the input
# codes of the shipped models: every GDN reads 12-bit codes (int16), and so do the two
# convolutions after g_a.3 and g_a.5 and the output layer after g_s.5.
LAYERS = [
    ("g_s deconv 192->128 @48x32", "deconv", (48, 32), 192, 128, 5, 2, np.int16, True),
    ("g_s igdn 128 @96x64", "igdn", (96, 64), 128, 128, 1, 1, np.int16, True),
    ("g_s deconv 128->128 @96x64", "deconv", (96, 64), 128, 128, 5, 2, np.int8, True),
    ("g_s igdn 128 @192x128", "igdn", (192, 128), 128, 128, 1, 1, np.int16, True),
    ("g_s deconv 128->128 @192x128", "deconv", (192, 128), 128, 128, 5, 2, np.int8, True),
    ("g_s igdn 128 @384x256", "igdn", (384, 256), 128, 128, 1, 1, np.int16, True),
    ("g_s deconv 128->3 @384x256", "deconv", (384, 256), 128, 3, 5, 2, np.int16, True),
    # The same output layer on 8-bit codes (not in the g_s total).
    ("  ... on int8 codes", "deconv", (384, 256), 128, 3, 5, 2, np.int8, False),
    ("g_a conv 3->128 @768x512", "conv", (768, 512), 3, 128, 5, 2, np.int8, False),
    ("g_a conv 128->128 @384x256", "conv", (384, 256), 128, 128, 5, 2, np.int8, False),
    ("g_a conv 128->128 @192x128", "conv", (192, 128), 128, 128, 5, 2, np.int16, False),
    ("g_a conv 128->192 @96x64", "conv", (96, 64), 128, 192, 5, 2, np.int16, False),
    ("g_a gdn 128 @384x256", "gdn", (384, 256), 128, 128, 1, 1, np.int16, False),
    # A transposed convolution and its inverse GDN as the decoder runs them, one step (not in
    # the g_s total, which has each of them above).
    ("g_s deconv+igdn @96x64, one step", "deconv+igdn", (96, 64), 128, 128, 5, 2, np.int8,
     False),
    ("g_s deconv+igdn @192x128, one step", "deconv+igdn", (192, 128), 128, 128, 5, 2, np.int8,
     False),
]


def _best(fn, reps):
    fn()  # compile / warm up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _macs(op, wh, cin, cout, k, stride):
    w, h = wh
    if op == "deconv+igdn":  # and the GDN's 1x1 product at the output's 4 w h pixels
        return w * h * cin * cout * k * k + 4 * w * h * cout * cout
    if op == "deconv":
        return w * h * cin * cout * k * k
    return -(-w // stride) * -(-h // stride) * cin * cout * k * k


def _ours(op, wh, cin, cout, k, stride, dtype, rng):
    w, h = wh
    x = rng.integers(-100, 101, (h, w, cin)).astype(dtype)
    mult = np.full(cout, 1 << 20, np.int32)
    shift = np.full(cout, 30, np.int32)
    # The convolutions' requantization as in the shipped g_a and g_s layers: no LeakyReLU
    # (their non-linearity is the GDN) and shifts of 33 or more (35 to 43 there), which the
    # epilogue computes from the products' high words (``engine/highword.py``).
    conv_mult = np.full(cout, 1 << 30, np.int32)
    conv_shift = np.full(cout, 40, np.int32)
    if op in ("gdn", "igdn"):
        gamma = kernels.pack_gdn_weights(rng.integers(0, 256, (cin, cin)).astype(np.uint8))
        beta = np.full(cin, 1 << 16, np.int32)
        if op == "gdn":
            gm = np.full(cin, 1 << 40, np.int64)
            return lambda: kernels.gdn(x, gamma, beta, gm, 8)
        return lambda: kernels.igdn(x, gamma, beta, mult, shift)
    wt = rng.integers(-20, 21, (cout, k, k, cin)).astype(np.int8)
    bias = np.zeros(cout, np.int32)
    if op == "deconv+igdn":  # 12-bit codes between them, and out of g_s.5 (the widest)
        packed = kernels.pack_deconv_weights(wt)
        gamma = kernels.pack_gdn_weights(rng.integers(0, 256, (cout, cout)).astype(np.uint8))
        beta = np.full(cout, 1 << 16, np.int32)
        out_max = 2047 if wh == (192, 128) else 127
        return lambda: kernels.conv_transpose2d_requant_igdn(
            x, packed, bias, conv_mult, conv_shift, 0, 0, -2047, 2047, np.int16, gamma, beta,
            mult, shift, out_max)
    if op == "deconv":
        packed = kernels.pack_deconv_weights(wt)
        return lambda: kernels.conv_transpose2d_requant(x, packed, bias, conv_mult, conv_shift,
                                                        0, 0, -127, 127, np.int8)
    packed = kernels.pack_conv_weights(wt)
    return lambda: kernels.conv2d_requant(x, packed, bias, stride, 0, conv_mult, conv_shift, 0,
                                          0, -127, 127, np.int8)


def _torch(op, wh, cin, cout, k, stride, channels_last, rng):
    w, h = wh
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.from_numpy(rng.standard_normal((1, cin, h, w), np.float32)).to(memory_format=fmt)
    b = torch.zeros(cout)
    if op in ("gdn", "igdn"):
        g = torch.from_numpy(rng.random((cout, cin, 1, 1), np.float32)).to(memory_format=fmt)
        if op == "gdn":
            return lambda: x / torch.sqrt(F.conv2d(x.abs(), g, b))
        return lambda: x * torch.sqrt(F.conv2d(x.abs(), g, b))
    if op in ("deconv", "deconv+igdn"):
        wt = torch.from_numpy(rng.standard_normal((cin, cout, k, k), np.float32))
        wt = wt.to(memory_format=fmt)
        if op == "deconv":
            return lambda: F.leaky_relu(F.conv_transpose2d(x, wt, b, 2, 2, 1))
        g = torch.from_numpy(rng.random((cout, cout, 1, 1), np.float32)).to(memory_format=fmt)

        def pair():
            y = F.conv_transpose2d(x, wt, b, 2, 2, 1)
            return y * torch.sqrt(F.conv2d(y.abs(), g, b))
        return pair
    wt = torch.from_numpy(rng.standard_normal((cout, cin, k, k), np.float32))
    wt = wt.to(memory_format=fmt)
    return lambda: F.leaky_relu(F.conv2d(x, wt, b, stride, k // 2))


def run(threads, reps):
    numba.set_num_threads(threads)
    paths = kernels.available_paths()
    cols = [f"ours {p}" for p in paths]
    if torch is not None:
        torch.set_num_threads(threads)
        cols += ["torch NCHW", "torch NHWC"]
    print(f"\n{threads} thread(s), GMAC/s (best of {reps}); ratio = fastest ours / fastest torch")
    print(f"{'layer':32s} {'GMAC':>6s} " + " ".join(f"{c:>13s}" for c in cols) +
          ("     ratio" if torch is not None else ""))
    totals = {c: 0.0 for c in cols}
    macs_total = 0
    rng = np.random.default_rng(0)
    for name, op, wh, cin, cout, k, stride, dtype, in_gs in LAYERS:
        macs = _macs(op, wh, cin, cout, k, stride)
        times = {}
        for p in paths:
            with kernels.use_path(p):
                times[f"ours {p}"] = _best(_ours(op, wh, cin, cout, k, stride, dtype, rng), reps)
        if torch is not None:
            with torch.no_grad():
                for cl in (False, True):
                    fn = _torch(op, wh, cin, cout, k, stride, cl, rng)
                    times["torch NHWC" if cl else "torch NCHW"] = _best(fn, reps)
        if in_gs:
            macs_total += macs
            for c in cols:
                totals[c] += times[c]
        line = f"{name:32s} {macs / 1e9:6.2f} " + " ".join(
            f"{macs / times[c] / 1e9:13.1f}" for c in cols)
        if torch is not None:
            ours = min(times[f"ours {p}"] for p in paths)
            line += f" {min(times['torch NCHW'], times['torch NHWC']) / ours:8.2f}x"
        print(line, flush=True)
    line = f"{'g_s total (ms)':32s} {macs_total / 1e9:6.2f} " + " ".join(
        f"{totals[c] * 1e3:13.1f}" for c in cols)
    if torch is not None:
        ours = min(totals[f"ours {p}"] for p in paths)
        line += f" {min(totals['torch NCHW'], totals['torch NHWC']) / ours:8.2f}x"
    print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--quick", action="store_true", help="2 repetitions instead of 5")
    args = parser.parse_args()
    if torch is None:
        print("torch is not installed: its columns are skipped")
    for n in args.threads:
        run(n, 2 if args.quick else 5)


if __name__ == "__main__":
    main()
