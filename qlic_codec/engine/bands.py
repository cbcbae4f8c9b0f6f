"""Running a transform in horizontal bands, so that its memory grows with the width of the
image, not with its area.

A band is a range of the transform's output rows. Walking the layer list backwards gives the
input rows each layer needs for it (its receptive field, the halo), from the kernel size,
stride and padding of each layer; a band then runs forward through the ordinary kernels on
those row slices, and keeps of each layer's output only the rows the next layer needs. The
rows of a layer's input that the next band reads too (the halo) are kept from one band to
the next, so no row is computed twice, apart from the rows next to a cut (below).

Why the result is the whole-image result, bit for bit: every output element of a kernel is a
function of the input elements it reads, and of the padding where it reads outside the
tensor. The rows a band keeps read only rows inside the slice, or outside the whole tensor,
where the slice's padding is the tensor's padding (a slice that is clipped there starts at
row 0 or ends at the last row). Rows a slice computes near a cut inside the tensor read the
kernel's padding instead of their neighbours and are dropped. A strided convolution's slice
starts on a multiple of its stride, so its output rows are rows of the whole output, not
rows in between.

The band height comes from a budget of bytes for the activations of one band (``BAND_BYTES``);
an image whose transform fits the budget runs as one band, exactly as before.
"""

import numpy as np

# The activations of one band (a layer's input, its padded copy inside the kernel and its
# output) stay near this. Each cut costs a row or two of a kernel's padding per layer, so
# larger bands are faster; at this size a 768x512 image runs every transform as one band, as
# before, and a 12000-pixel-wide one in bands of two latent rows (g_a) or 48 pixel rows (g_s),
# which keeps a 100-megapixel encode, input image included, under 1 GiB
# (benchmarks/README.md).
BAND_BYTES = 96 * 2**20


def output_rows(layer: dict, rows: int) -> int:
    """Rows of a layer's output for ``rows`` input rows."""
    if layer["op"] == "conv":
        return -(-rows // layer["stride"])
    if layer["op"] == "deconv":
        return 2 * rows
    return rows


def input_span(layer: dict, lo: int, hi: int, rows: int) -> tuple[int, int]:
    """The input rows ``[a, b)`` a layer reads for its output rows ``[lo, hi)``, of ``rows``
    input rows: clipped to the tensor, and for a strided convolution starting on a multiple
    of the stride (``first_output_row``)."""
    op = layer["op"]
    if op in ("gdn", "igdn"):
        return lo, hi
    k = layer["weight"].shape[1]
    p = k // 2
    if op == "conv":
        # Output row o reads input rows s*o - p .. s*o - p + k - 1.
        s = layer["stride"]
        a = max(0, s * lo - p)
        return a - a % s, min(rows, s * (hi - 1) - p + k)
    # Transposed, stride 2: input row i adds to output rows 2*i - p .. 2*i - p + k - 1.
    a = -(-(lo + p - k + 1) // 2)
    return max(0, min(a, lo // 2)), min(rows, (hi - 1 + p) // 2 + 1)


def first_output_row(layer: dict, a: int) -> int:
    """The output row of a layer that a slice of its input starting at row ``a`` computes
    first."""
    if layer["op"] == "conv":
        return a // layer["stride"]
    if layer["op"] == "deconv":
        return 2 * a
    return a


def spans(layers: list, rows: int, lo: int, hi: int) -> list:
    """For output rows ``[lo, hi)`` of a transform with ``rows`` input rows: the input span of
    every layer, then ``(lo, hi)``."""
    heights = [rows]
    for layer in layers[:-1]:
        heights.append(output_rows(layer, heights[-1]))
    need = [(lo, hi)]
    for layer, h in zip(reversed(layers), reversed(heights)):
        need.append(input_span(layer, *need[-1], h))
    return need[::-1]


def _code_bytes(layer: dict, last: bool) -> int:
    if last:
        return 4  # int32 accumulators
    return 2 if layer.get("wide") else 1


def band_bytes(layers: list, rows: int, width: int, channels: int, in_bytes: int, lo: int,
               hi: int) -> int:
    """Bytes of the largest layer of a band: its input, a convolution's padded copy of the
    input (int16 on the portable and AVX2 paths) and its output."""
    need = spans(layers, rows, lo, hi)
    peak = 0
    for i, layer in enumerate(layers):
        a, b = need[i]
        out_width = output_rows(layer, width)  # columns scale as rows do
        out_channels = (layer["weight"] if "weight" in layer else layer["gamma"]).shape[0]
        out_bytes = _code_bytes(layer, i == len(layers) - 1)
        computed = output_rows(layer, b - a)
        x = (b - a) * width * channels
        padded = 2 if layer["op"] in ("conv", "deconv") else 0
        peak = max(peak, x * (in_bytes + padded)
                   + computed * out_width * out_channels * out_bytes)
        width, channels, in_bytes = out_width, out_channels, out_bytes
    return peak


def alignment(layers: list) -> int:
    """Output rows per input row (at least 1): band edges on multiples of it fall between
    input rows."""
    up = 2 ** sum(1 for x in layers if x["op"] == "deconv")
    down = int(np.prod([x["stride"] for x in layers if x["op"] == "conv"]))
    return max(1, up // down)


def band_height(layers: list, rows: int, width: int, channels: int, in_bytes: int,
                budget: int | None = None) -> int:
    """The most output rows per band (a multiple of ``alignment``) whose activations fit
    ``budget`` (None: ``BAND_BYTES``, read at each call so that tests can shrink it),
    measured on a band in the middle of the image (halos on both sides); all of them when
    the whole transform fits. ``rows``, ``width`` and ``channels`` are the transform's input
    shape, ``in_bytes`` the bytes of an input code."""
    budget = BAND_BYTES if budget is None else budget
    out_rows = rows
    for layer in layers:
        out_rows = output_rows(layer, out_rows)
    step = alignment(layers)
    if band_bytes(layers, rows, width, channels, in_bytes, 0, out_rows) <= budget:
        return out_rows
    best = step
    height = 2 * step
    while height < out_rows:
        lo = (out_rows // 2 - height // 2) // step * step
        if band_bytes(layers, rows, width, channels, in_bytes, lo, lo + height) > budget:
            break
        best = height
        height += step
    return best


def in_pieces(write_rows, elements: int):
    """``write_rows(lo, acc)`` taking at most ``elements`` accumulators (and at least one row)
    at a time: what a band's heads do with its rows (int64 arithmetic, copies) stays small."""
    def pieces(lo, acc):
        step = max(1, elements // (acc.shape[1] * acc.shape[2]))
        for a in range(0, len(acc), step):
            write_rows(lo + a, acc[a: a + step])
    return pieces


def run_rows(run_layer, layers: list, rows: int, read_rows, lo: int, hi: int) -> np.ndarray:
    """The last layer's accumulators of output rows ``[lo, hi)`` of a transform with ``rows``
    input rows, computed from the input rows they need (``read_rows(a, b)``: rows ``[a, b)``
    of the transform's input codes); ``run_layer(layer, x)`` runs one layer
    (``IntegerNetwork``)."""
    need = spans(layers, rows, lo, hi)
    start = need[0][0]
    x = read_rows(*need[0])
    for layer, (a, b) in zip(layers, need[1:]):
        x = run_layer(layer, x)
        start = first_output_row(layer, start)
        # Rows at the slice's cuts inside the tensor read the kernel's padding: drop them (a
        # row slice of a C-contiguous array is still contiguous, so this copies nothing).
        x = x[a - start: b - start]
        start = a
    return x


def run(run_layer, layers: list, rows: int, read_rows, write_rows, band: int,
        join_into=None, reuse: bool = False) -> None:
    """Run a transform over all its output rows in bands of ``band`` rows (at least 1):
    ``write_rows(lo, acc)`` takes the last layer's output (accumulators, or the pixels of
    ``IntegerNetwork._synthesis_steps``) of output rows ``lo .. lo + len(acc) - 1``; the
    other arguments are those of ``run_rows``.

    Each layer keeps the input rows that the next band reads too (its halo), so a band
    computes only rows that no band before it computed: every row of every layer is computed
    once, as in the whole-image run, and only the kept rows cost memory beyond a band.

    A layer's input in a band is its kept rows, then the rows the layer before made new.
    ``join_into(layer, x, head, skip, rows, slot)``, where given, returns ``concatenate([head,
    run_layer(layer, x)[skip: skip + rows]])`` (``head`` None: no rows) by writing the layer's output in place
    behind ``head`` (``IntegerNetwork._run_layer_joined``), which saves copying every band's
    new rows once more.

    ``reuse`` (with ``join_into``, over several bands): each layer but the last writes every
    band's rows into one buffer kept for the run (``join_into``'s last argument, a dict it
    keeps the buffer in), since a band's rows are no longer read once the next band starts
    (what it keeps are copies). A new buffer per band is new memory that the system faults
    in and zeroes page by page: 44 MB per band for g_s.4's codes at 1920x1080, where the
    memory the C allocator serves that large comes fresh from the system each time. Kept,
    the buffers add the later layers' rows to the peak while the earlier layers run: little
    for g_s, whose layers grow band by band, but g_a's shrink, so only the synthesis asks.
    """
    heights = [rows]
    for layer in layers:
        heights.append(output_rows(layer, heights[-1]))
    out_rows = heights[-1]
    kept = [None] * len(layers)  # (first row, rows) of each layer's input, from bands before
    several = reuse and join_into is not None and out_rows > band
    slots = [{} if several else None for _ in layers[:-1]] + [None]  # never the last layer's
    for lo in range(0, out_rows, band):
        hi = min(out_rows, lo + band)
        # Backwards: the input rows [a, b) each layer reads for its new output rows, and which
        # of them are new (not kept), for the layer before to make.
        reads, fresh = {}, {}
        new = (lo, hi)
        first = 0  # the first layer that runs in this band
        for i in range(len(layers) - 1, -1, -1):
            a, b = input_span(layers[i], *new, heights[i])
            reads[i] = (a, b)
            start = a
            if kept[i] is not None and kept[i][0] <= a:
                start = max(a, min(b, kept[i][0] + len(kept[i][1])))
            fresh[i] = new = (start, b)
            if start == b:  # everything this layer reads is kept: the layers before rest
                first = i
                break
        x = read_rows(*fresh[0]) if first == 0 and fresh[0][0] < fresh[0][1] else None
        following = spans(layers, rows, hi, min(out_rows, hi + band)) if hi < out_rows else None
        joined = False  # whether x already holds this layer's kept rows
        for i in range(first, len(layers)):
            a, b = reads[i]
            if not joined:
                x = _join(kept[i], x, a, fresh[i][0])
            # Keep what the next band reads too (a copy, so that the band's array can go):
            # it reads no row below this band's (the rows a band reads only move down).
            keep_from = max(a, following[i][0]) if following else b
            kept[i] = (keep_from, x[keep_from - a:].copy()) if keep_from < b else None
            start = first_output_row(layers[i], a)
            c, d = fresh[i + 1] if i + 1 < len(layers) else (lo, hi)
            # Rows at the slice's cuts inside the tensor read the kernel's padding: they are
            # dropped (rows c - start .. d - start of the output are kept).
            head = _kept_rows(kept[i + 1], reads[i + 1][0], c) if i + 1 < len(layers) else None
            joined = join_into is not None and (head is not None or slots[i] is not None)
            if joined:
                x = join_into(layers[i], x, head, c - start, d - c, slots[i])
            else:
                x = run_layer(layers[i], x)[c - start: d - start]
        write_rows(lo, x)


def _kept_rows(kept, a: int, start: int):
    """The kept rows ``a .. start - 1`` of a layer's input, or None where there are none."""
    if start == a:
        return None
    return kept[1][a - kept[0]: start - kept[0]]


def _join(kept, new, a: int, start: int) -> np.ndarray:
    """Rows ``a ..`` of a layer's input: the kept rows ``a .. start - 1``, then ``new``."""
    old = _kept_rows(kept, a, start)
    if old is None:
        return new
    return old if new is None or len(new) == 0 else np.concatenate([old, new])
