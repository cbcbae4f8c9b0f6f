"""The integer network: g_a, h_a, h_s and g_s run from an in-memory model spec.

Data flow (all integers; ``q`` is the quality sub-level, 0-based: a row of every per-level
head, ``quality_steps`` rows per unit of quality in the model file)::

    pixels - 128 (int8) --g_a--> acc_y (int32) --head.y[q]----> y_g   (y * gain, fixed point)
                                      |
                                      +--head.ha_in (acc - offset)--> int8 --h_a--> acc_z
                                                                       head.z --> z (int32)
    z (clamped, int16) --h_s--> acc_p (int32, 2M channels)
        channels 0..M-1   --head.mean[q]--> mean_g (mean * gain, fixed point)
        channels M..2M-1  --head.scale[q]-> scale index (0..levels-1, log-spaced table)
    symbol = round(y_g - mean_g)           (integer, coded with the scale index's table)
    y_g_hat = symbol + mean_g --head.ys[q]--> int16 codes of y_g_hat/gain --g_s--> acc_x
    acc_x --head.pixel--> uint8

Only the heads marked ``[q]`` depend on the level: an encoder trying several levels runs g_a,
h_a and h_s once (``analysis_accumulators``, ``hyper_accumulators``) and the heads per level.

``y_g`` and ``mean_g`` carry ``mean_bits`` fractional bits, so the reconstruction keeps the
predicted mean's fraction and the zero-mean tables fit the symbols.

Every transform is a list of layers: ``conv`` (K x K, stride 1/2), ``deconv`` (5x5, stride 2),
``gdn`` / ``igdn`` (simplified GDN on 8-bit codes, or on the 12-bit codes of the convolution
before it). A conv layer either requantizes its accumulators to the next layer's codes in its
epilogue (with optional LeakyReLU) or, as the last layer of a transform, hands them to a head. The spec is validated (names, dtypes,
shapes, ranges and the overflow bound of every accumulator) before anything runs.
"""

import re
from dataclasses import dataclass

import numpy as np

from ..errors import ModelFileError
from ..padding import padded_codes
from . import bands, fixedpoint, schema
from . import reference
from .reference import GDN_OUT_MAX, WIDE_CODE_MAX
from .schema import TRANSFORMS
# Names of layers, ops and arrays end up in error messages: keep them short, printable and on
# one line (the model file checks its array names with it too).
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_GDN_SHIFT_MAX = 30
# (stride-2 convolutions, transposed convolutions) of each transform: g_a and g_s scale by
# 16, h_a and h_s by 4, which is what ``api.BLOCK`` and the latent shapes rely on.
_RESAMPLING = {"g_a": (4, 0), "h_a": (2, 0), "h_s": (0, 2), "g_s": (0, 4)}
# The analysis pads images to multiples of g_a's and h_a's downsampling together.
_BLOCK = 64
# Latents a head's NumPy arithmetic (int64) works on at a time.
_HEAD_ELEMENTS = 1 << 20


@dataclass
class ModelSpec:
    """A model in memory: JSON-able ``manifest`` and named integer ``arrays``."""

    manifest: dict
    arrays: dict


class _ReadArrays(dict):
    """The model's arrays, remembering which ones the loader read: a file with an array that
    nothing reads was made for another reader (``unread_arrays``)."""

    def __init__(self, arrays) -> None:
        super().__init__(arrays)
        self.read: set = set()

    def __getitem__(self, name):
        self.read.add(name)
        return super().__getitem__(name)

    def get(self, name, default=None):
        if name in self:
            self.read.add(name)
        return super().get(name, default)


# Band plans a network keeps (``IntegerNetwork.band_height``): one per transform and image
# shape, so a process decoding images of many sizes forgets them now and then.
_BAND_PLANS = 256


def _array(arrays, name, dtype, shape):
    if name not in arrays:
        raise ModelFileError(f"model is missing array '{name}'")
    a = arrays[name]
    if a.dtype != np.dtype(dtype):
        raise ModelFileError(f"array '{name}' has dtype {a.dtype}, expected {np.dtype(dtype)}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ModelFileError(f"array '{name}' has shape {a.shape}, expected {tuple(shape)}")
    return np.ascontiguousarray(a)


def _into(codes: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """``codes``, or a copy of them in ``out`` where one is given."""
    if out is None:
        return codes
    out[...] = codes
    return out


def _fused_steps(layers: list) -> list:
    """``layers`` with each requantized transposed convolution and the inverse GDN after it
    as one step: the convolution's description (what ``bands`` reads: op, weight, stride),
    named after both, with ``pair`` holding the two layers and ``wide`` the GDN's."""
    steps = []
    for layer in layers:
        before = steps[-1] if steps else None
        if (layer["op"] == "igdn" and before is not None and before["op"] == "deconv"
                and "pair" not in before and before["out"] is not None):
            steps[-1] = {**before, "name": f"{before['name']}+{layer['name']}",
                         "pair": (before, layer), "wide": layer["wide"]}
        else:
            steps.append(layer)
    return steps


def _band_buffer(slot: dict | None, shape: tuple, dtype) -> np.ndarray:
    """An array of ``shape`` and ``dtype``: new where there is no ``slot``, else the first
    rows of the buffer ``slot`` keeps, made anew (an eighth taller, for the bands after the
    first, which also hold the rows kept from the band before) where it is too small."""
    if slot is None:
        return np.empty(shape, dtype)
    held = slot.get("buffer")
    if (held is None or held.dtype != dtype or held.shape[1:] != shape[1:]
            or len(held) < shape[0]):
        held = np.empty((shape[0] + shape[0] // 8,) + shape[1:], dtype)
        slot["buffer"] = held
    return held[: shape[0]]


def _conv_code_dtype(layer: dict) -> type:
    """The type of the codes a (not last) convolution writes: 12-bit codes where marked wide."""
    return np.int16 if layer["wide"] else np.int8


def _check_range(name, a, lo, hi):
    if a.size and (a.min() < lo or a.max() > hi):
        raise ModelFileError(f"array '{name}' has values outside {lo}..{hi}")


class IntegerNetwork:
    """Validated integer network; ``kernels`` is the module that runs the layers.

    Args:
        spec: the model (see ``quantize.export``).
        kernels: ``engine.kernels`` (default) or ``engine.reference``: same names, same results.
    """

    def __init__(self, spec: ModelSpec, kernels=None) -> None:
        if kernels is None:
            from . import kernels as default_kernels
            kernels = default_kernels
        self.k = kernels
        m = spec.manifest
        # Keys and types first (an unknown key anywhere is refused: it could change the
        # pixels), the channel-conditional model's "cc" object included.
        schema.check_manifest(m, check_cc=schema.check_cc)
        try:
            self.N, self.M, self.levels = int(m["N"]), int(m["M"]), int(m["levels"])
            self.leaky_mult, self.leaky_shift = (int(v) for v in m["leaky"])
            self.clamps = {k: int(m["clamps"][k]) for k in ("y", "z", "ys")}
            self.mean_bits = int(m["mean_bits"])
            self.scale_shift = int(m["scale_shift"])
            self.y_levels = int(m["y_levels"])
            layer_lists = {t: list(m["transforms"][t]) for t in TRANSFORMS}
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ModelFileError(f"model manifest is incomplete or malformed: {exc}") from None
        if not (1 <= self.levels <= 255 and 1 <= self.N <= 4096 and 1 <= self.M <= 4096):
            raise ModelFileError("model manifest has out-of-range sizes")
        # A slope above 1 would break the int64 bound of the requantization product.
        if not (0 <= self.leaky_mult <= 2**self.leaky_shift and 1 <= self.leaky_shift <= 16):
            raise ModelFileError("model manifest has an invalid LeakyReLU slope")
        if not (1 <= self.scale_shift <= 30 and 2 <= self.y_levels <= 1024):
            raise ModelFileError("model manifest has an invalid scale-index mapping")
        if not 0 <= self.mean_bits <= 8:
            raise ModelFileError("model manifest has an invalid number of mean fraction bits")
        for key, value in self.clamps.items():
            if not 1 <= value <= (2**24 if key == "y" else 32767):
                raise ModelFileError(f"model manifest clamp '{key}' is out of range")
        arrays = _ReadArrays(spec.arrays)
        try:
            self.layers = {t: [self._load_layer(arrays, d) for d in layer_lists[t]]
                           for t in TRANSFORMS}
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
            # A layer description without a required key, or with a value of the wrong type.
            raise ModelFileError(f"model layer description is malformed: {exc!r}") from None
        self._load_heads(arrays)
        self._check_chain()
        # What runs: the layers, with each transposed convolution and the inverse GDN after
        # it as one step (``_fused_steps``). The band heights still come from the layers.
        self.steps = {t: _fused_steps(layers) for t, layers in self.layers.items()}
        self._band_heights = {}  # ``band_height``'s answers
        # The channel-conditional entropy model of y (``engine.slices``), when the model has one.
        self.cc = None
        if "cc" in m:
            from .slices import SliceModel
            self.cc = SliceModel(self, m["cc"], arrays)
        self.arrays_read = frozenset(arrays.read)

    # ---------------------------------------------------------------------------------------
    # Loading and validation

    def _load_layer(self, arrays, d):
        try:
            name, op = str(d["name"]), str(d["op"])
            if not NAME_PATTERN.fullmatch(name) or not NAME_PATTERN.fullmatch(op):
                raise ModelFileError(f"model layer has an invalid name or op {name[:40]!r}")
        except (KeyError, TypeError):
            raise ModelFileError("model layer without a name or op") from None
        layer = {"name": name, "op": op}
        if op in ("conv", "deconv"):
            w = arrays.get(f"{name}.weight")
            if w is None or w.ndim != 4:
                raise ModelFileError(f"layer '{name}' has no 4-D weight")
            cout, k, k2, cin = w.shape
            layer["weight"] = _array(arrays, f"{name}.weight", np.int8, (cout, k, k2, cin))
            layer["bias"] = _array(arrays, f"{name}.bias", np.int32, (cout,))
            layer["stride"] = int(d.get("stride", 2))
            layer["pad_value"] = int(d.get("pad_value", 0))
            layer["in_max"] = int(d["in_max"])
            if k != k2 or k not in (1, 3, 5) or layer["stride"] not in (1, 2):
                raise ModelFileError(f"layer '{name}' has an unsupported kernel or stride")
            if op == "deconv" and (k != 5 or layer["stride"] != 2):
                raise ModelFileError(f"layer '{name}': transposed convolution must be 5x5/2")
            if layer["pad_value"] not in (0, -128) or not 1 <= layer["in_max"] <= 32768:
                raise ModelFileError(f"layer '{name}' has an invalid padding or input range")
            l1 = (fixedpoint.deconv_weight_l1 if op == "deconv" else
                  fixedpoint.conv_weight_l1)(layer["weight"])
            bound = fixedpoint.accumulator_bound(layer["in_max"], l1, layer["bias"])
            if max(bound) >= fixedpoint.INT32_LIMIT:
                raise ModelFileError(f"layer '{name}' could overflow its int32 accumulators")
            # Pack once for the kernels (the unpacked weight stays for validation).
            pack = getattr(self.k, f"pack_{op}_weights", None)
            layer["packed"] = pack(layer["weight"]) if pack is not None else layer["weight"]
            out = d.get("out")
            layer["out"] = out
            if out is not None:
                layer["mult"] = _array(arrays, f"{name}.mult", np.int32, (cout,))
                layer["shift"] = _array(arrays, f"{name}.shift", np.int32, (cout,))
                _check_range(f"{name}.mult", layer["mult"], 0, 2**31 - 1)
                _check_range(f"{name}.shift", layer["shift"], 1, 62)
                layer["leaky"] = bool(out.get("leaky", False))
                layer["lo"], layer["hi"] = int(out["lo"]), int(out["hi"])
                if not -WIDE_CODE_MAX <= layer["lo"] < layer["hi"] <= WIDE_CODE_MAX:
                    raise ModelFileError(f"layer '{name}' has an invalid output range")
                # Codes beyond 8 bits are int16 (only a GDN may read them: _check_chain).
                layer["wide"] = max(-layer["lo"], layer["hi"]) > 127
        elif op in ("gdn", "igdn"):
            gamma = arrays.get(f"{name}.gamma")
            if gamma is None or gamma.ndim != 2:
                raise ModelFileError(f"layer '{name}' has no 2-D gamma")
            c = gamma.shape[0]
            layer["gamma"] = _array(arrays, f"{name}.gamma", np.uint8, (c, c))
            layer["beta"] = _array(arrays, f"{name}.beta", np.int32, (c,))
            pack = getattr(self.k, "pack_gdn_weights", None)
            layer["packed"] = pack(layer["gamma"]) if pack is not None else layer["gamma"]
            _check_range(f"{name}.beta", layer["beta"], 1, 2**24)
            # Output codes: 8-bit, or up to 12-bit (int16) for a convolution to read.
            layer["out_max"] = int(d.get("out_max", 127))
            if layer["out_max"] not in GDN_OUT_MAX:
                raise ModelFileError(f"layer '{name}' has an invalid output range")
            layer["wide"] = layer["out_max"] > 127
            # The bounds that depend on the input codes' range are checked in _check_chain.
            if op == "gdn":
                layer["mult"] = _array(arrays, f"{name}.mult", np.int64, (c,))
                layer["shift"] = int(d["shift"])
                if not 0 <= layer["shift"] <= _GDN_SHIFT_MAX:
                    raise ModelFileError(f"layer '{name}' has an invalid shift")
                _check_range(f"{name}.mult", layer["mult"], 0, 2**54)
            else:
                layer["mult"] = _array(arrays, f"{name}.mult", np.int32, (c,))
                layer["shift"] = _array(arrays, f"{name}.shift", np.int32, (c,))
                _check_range(f"{name}.shift", layer["shift"], 1, 62)
                _check_range(f"{name}.mult", layer["mult"], 0, 2**31 - 1)
        else:
            raise ModelFileError(f"layer '{name}' has unknown op '{op}'")
        return layer

    def _load_heads(self, arrays):
        L, M, N = self.levels, self.M, self.N
        h = {}
        for key, shape in (("y", (L, M)), ("mean", (L, M)), ("ys", (L, M)),
                           ("ha_in", (M,)), ("z", (N,)), ("pixel", (3,))):
            h[f"{key}.mult"] = _array(arrays, f"head.{key}.mult", np.int32, shape)
            h[f"{key}.shift"] = _array(arrays, f"head.{key}.shift", np.int32, shape)
            _check_range(f"head.{key}.mult", h[f"{key}.mult"], 0, 2**31 - 1)
            _check_range(f"head.{key}.shift", h[f"{key}.shift"], 1, 62)
        # Mean-removed quantization of y for the hyper-analysis: required since format 2
        # (format 1 read a missing array as zeros, one of the changes of meaning that format
        # 1 did not version).
        h["ha_in.offset"] = _array(arrays, "head.ha_in.offset", np.int32, (M,))
        _check_range("head.ha_in.offset", h["ha_in.offset"], -(2**30), 2**30)
        h["scale.mult"] = _array(arrays, "head.scale.mult", np.int64, (M,))
        h["scale.offset"] = _array(arrays, "head.scale.offset", np.int64, (L, M))
        _check_range("head.scale.mult", h["scale.mult"], -(2**31), 2**31)
        _check_range("head.scale.offset", h["scale.offset"], -(2**60), 2**60)
        self.heads = h

    def _check_chain(self):
        """Channel counts line up, and each layer's declared input range is what it gets."""
        expect = {"g_a": (3, self.M), "h_a": (self.M, self.N), "h_s": (self.N, 2 * self.M),
                  "g_s": (self.M, 3)}
        in_max = {"g_a": 128, "h_a": 127, "h_s": self.clamps["z"], "g_s": self.clamps["ys"]}
        for t, layers in self.layers.items():
            if not layers or layers[0]["op"] not in ("conv", "deconv"):
                raise ModelFileError(f"transform '{t}' must start with a convolution")
            channels, last = expect[t]
            current_max = in_max[t]
            for i, layer in enumerate(layers):
                final = i == len(layers) - 1
                if layer["op"] in ("conv", "deconv"):
                    cout, _, _, cin = layer["weight"].shape
                    if cin != channels or layer["in_max"] < current_max:
                        raise ModelFileError(f"layer '{layer['name']}' does not fit its input")
                    if (layer["out"] is None) != final:
                        raise ModelFileError(f"layer '{layer['name']}': only the last layer of "
                                             "a transform hands out accumulators")
                    channels = cout
                    if not final:
                        current_max = max(abs(layer["lo"]), abs(layer["hi"]))
                else:
                    if layer["gamma"].shape[0] != channels or final:
                        raise ModelFileError(f"layer '{layer['name']}' does not fit its input")
                    self._check_gdn_bounds(layer, current_max)
                    current_max = layer["out_max"]
                # A GDN's wide output goes to a convolution (a GDN is never last); a
                # convolution's wide output must go to a GDN.
                if (layer.get("wide") and layer["op"] in ("conv", "deconv")
                        and layers[i + 1]["op"] not in ("gdn", "igdn")):
                    raise ModelFileError(f"layer '{layer['name']}': codes wider than 8 bits "
                                         "must go to a GDN")
            if channels != last:
                raise ModelFileError(f"transform '{t}' ends with {channels} channels, "
                                     f"expected {last}")
            # The latent shapes the decoder derives from the header assume these factors.
            downs = sum(1 for x in layers if x["op"] == "conv" and x["stride"] == 2)
            ups = sum(1 for x in layers if x["op"] == "deconv")
            if (downs, ups) != _RESAMPLING[t]:
                raise ModelFileError(f"transform '{t}' has {downs} stride-2 convolutions and "
                                     f"{ups} transposed ones, expected {_RESAMPLING[t]}")
        if self.layers["g_a"][0]["pad_value"] != -128:
            raise ModelFileError("the first analysis layer must pad with the zero-pixel code")

    @staticmethod
    def _check_gdn_bounds(layer, in_max):
        """For inputs up to ``in_max``: the int32 norm cannot wrap and the int64 products of
        the division (GDN) or of the requantization (inverse GDN) stay below 2**62."""
        name, c = layer["name"], layer["gamma"].shape[0]
        norm_max = 2**24 + 255 * in_max * c
        # The kernels check int16 inputs against the whole int16 range (they cannot know the
        # clamp of the layer before): a file that passes here must pass there too.
        kernel_norm_max = 2**24 + 255 * (32767 if in_max > 127 else in_max) * c
        if kernel_norm_max >= fixedpoint.INT32_LIMIT:
            raise ModelFileError(f"layer '{name}' could overflow its int32 norm")
        # GDN's rounded division doubles |x * mult| before adding the shifted norm.
        limit = fixedpoint.INT64_PRODUCT_LIMIT // (in_max * (norm_max if layer["op"] == "igdn"
                                                              else 2))
        if layer["mult"].size and int(layer["mult"].max()) > limit:
            raise ModelFileError(f"layer '{name}' has a multiplier too large for its input")

    # ---------------------------------------------------------------------------------------
    # Running

    def _run(self, transform: str, x: np.ndarray) -> np.ndarray:
        """Run a transform on codes; returns the last layer's int32 accumulators."""
        return self.run_layers(self.steps[transform], x)

    def run_layers(self, layers: list, x: np.ndarray) -> np.ndarray:
        """Run validated layers on codes, whole; returns the last layer's accumulators."""
        for layer in layers:
            x = self._run_layer(layer, x)
        return x

    def _run_layer(self, layer: dict, x: np.ndarray, out: np.ndarray | None = None
                   ) -> np.ndarray:
        """One layer (or step, ``_fused_steps`` / ``_synthesis_steps``) on codes: the next
        codes, the int32 accumulators of a last layer, or the pixels of a pixel step.
        ``out``: where to write the codes (of ``_output_of``'s shape and type; not for a last
        layer), else a new array."""
        k = self.k
        op = layer["op"]
        if "pair" in layer:
            return self._run_pair(layer["pair"], x, out)
        if "pixels" in layer:
            return self._run_pixels(layer, x)
        if op in ("conv", "deconv"):
            args = (layer["packed"], layer["bias"])
            if op == "conv":
                args += (layer["stride"], layer["pad_value"])
            kind = "conv2d" if op == "conv" else "conv_transpose2d"
            conv = getattr(k, kind)
            if layer["out"] is None:
                return conv(x, *args)
            leaky = (self.leaky_mult, self.leaky_shift) if layer["leaky"] else (0, 0)
            req = (layer["mult"], layer["shift"], *leaky, layer["lo"], layer["hi"])
            fused = getattr(k, f"{kind}_requant", None)
            dtype = _conv_code_dtype(layer)
            if fused is not None:
                return fused(x, *args, *req, dtype) if out is None else \
                    fused(x, *args, *req, dtype, out=out)
            # ``reference`` specifies the fused kernels as these two steps
            return _into(k.requantize(conv(x, *args), *req).astype(dtype), out)
        gdn = k.gdn if op == "gdn" else k.igdn
        args = (x, layer["packed"], layer["beta"], layer["mult"], layer["shift"],
                layer["out_max"])
        if out is None:
            return gdn(*args)
        if k is reference:  # the specification computes; the kernels write into ``out``
            return _into(gdn(*args), out)
        return gdn(*args, out=out)

    def _run_pair(self, pair: tuple, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """A transposed convolution and the inverse GDN after it (``_fused_steps``): one
        kernel where the kernels have it (which runs the two in turn where it cannot fuse
        them), else the two layers in turn."""
        deconv, inverse = pair
        fused = getattr(self.k, "conv_transpose2d_requant_igdn", None)
        if fused is None:
            return self._run_layer(inverse, self._run_layer(deconv, x), out=out)
        leaky = (self.leaky_mult, self.leaky_shift) if deconv["leaky"] else (0, 0)
        return fused(x, deconv["packed"], deconv["bias"], deconv["mult"], deconv["shift"],
                     *leaky, deconv["lo"], deconv["hi"], _conv_code_dtype(deconv),
                     inverse["packed"], inverse["beta"], inverse["mult"], inverse["shift"],
                     inverse["out_max"], out=out)

    def _pair_fuses(self, pair: tuple, x: np.ndarray) -> bool:
        """Whether the kernels run the pair as one kernel on ``x``: where they do not, the
        convolution runs first and then the GDN, each with only its own buffers alive (the
        peak memory of the two layers, which ``bands.band_bytes`` budgets)."""
        fuses = getattr(self.k, "igdn_fuses", None)
        deconv, inverse = pair
        return fuses is not None and fuses(x, deconv["packed"], inverse["packed"],
                                           _conv_code_dtype(deconv))

    def _run_pixels(self, layer: dict, x: np.ndarray) -> np.ndarray:
        """The RGB output layer and the pixel head (``_synthesis_steps``): uint8 pixels of the
        first ``layer["pixels"]`` columns; one step where the kernels have it, else the
        layer's accumulators requantized."""
        last, width = layer["pixels"]
        mult, shift = self.heads["pixel.mult"], self.heads["pixel.shift"]
        fused = getattr(self.k, "conv_transpose2d_pixels", None)
        if fused is not None and last["op"] == "deconv":
            return fused(x, last["packed"], last["bias"], mult, shift, width)
        acc = np.ascontiguousarray(self._run_layer(last, x)[:, :width])
        return self.k.requantize(acc, mult, shift, 0, 0, 0, 255).astype(np.uint8)

    def _synthesis_steps(self, width: int) -> list:
        """g_s's steps, its last layer (a transposed convolution, or a stride-1 convolution,
        which the format allows) run with the pixel head into pixels of ``width`` columns
        (the crop of a padded image), so that its int32 accumulators are never written out
        whole."""
        last = self.steps["g_s"][-1]
        return self.steps["g_s"][:-1] + [{**last, "name": f"{last['name']}+pixels",
                                          "pixels": (last, width)}]

    def _output_of(self, layer: dict, x: np.ndarray) -> tuple[tuple, type]:
        """The shape and type of the codes a layer (not a last one) makes of ``x``."""
        if "pair" in layer:
            shape = self._output_of(layer["pair"][0], x)[0]
            return shape, np.int8 if layer["pair"][1]["out_max"] == 127 else np.int16
        if layer["op"] in ("gdn", "igdn"):
            return x.shape, np.int8 if layer["out_max"] == 127 else np.int16
        cout = layer["weight"].shape[0]
        if layer["op"] == "conv":
            shape = reference.conv2d_shape(x.shape, layer["stride"], cout)
        else:
            shape = reference.conv_transpose2d_shape(x.shape, cout)
        return shape, _conv_code_dtype(layer)

    def _run_layer_joined(self, layer: dict, x: np.ndarray, head, skip: int, rows: int,
                          slot: dict | None = None) -> np.ndarray:
        """``concatenate([head, run_layer(layer, x)[skip: skip + rows]])`` without the
        concatenation: the layer writes its codes into one buffer at the offset that puts its
        rows ``skip ..`` right after ``head`` (None: no rows), and ``head`` is copied in front
        of them (over rows of the output that are dropped). What ``bands.run`` joins for the
        next layer, the kept rows of a band before and this band's new ones. ``slot``: a dict
        that keeps the buffer from one band to the next (``bands.run``'s ``reuse``)."""
        if "pair" in layer and not self._pair_fuses(layer["pair"], x):
            # The GDN's buffer is made only once the convolution's codes exist.
            deconv, inverse = layer["pair"]
            return self._run_layer_joined(inverse, self._run_layer(deconv, x), head, skip, rows,
                                          slot)
        shape, dtype = self._output_of(layer, x)
        k = 0 if head is None else len(head)
        top = max(k, skip)  # the buffer row where output row ``skip`` lands
        buf = _band_buffer(slot, (top - skip + shape[0],) + shape[1:], dtype)
        self._run_layer(layer, x, out=buf[top - skip:])
        if k:
            buf[top - k: top] = head
        return buf[top - k: top + rows]

    def _in_bands(self, transform: str, shape: tuple, in_bytes: int, read_rows, write_rows,
                  band_rows: int | None, steps: list | None = None) -> None:
        """Run a transform band by band (``bands.run``) on an input of ``shape`` (rows,
        columns, channels) with ``in_bytes`` per code; ``band_rows`` None takes the band
        height from the memory budget; ``steps``: what runs, if not the transform's steps.
        The synthesis keeps its layers' buffers from band to band (``bands.run``'s
        ``reuse``)."""
        if band_rows is None:
            band_rows = self.band_height(self.layers[transform], *shape, in_bytes)
        bands.run(self._run_layer, steps or self.steps[transform], shape[0], read_rows,
                  write_rows, band_rows, join_into=self._run_layer_joined,
                  reuse=transform == "g_s")

    def _head(self, acc, key, level=None, lo=-(2**31), hi=2**31 - 1):
        mult, shift = self.heads[f"{key}.mult"], self.heads[f"{key}.shift"]
        if level is not None:
            mult, shift = mult[level], shift[level]
        return self.k.requantize(acc, mult, shift, 0, 0, lo, hi)

    def _latent_codes(self, level):
        """The synthesis' input codes of fixed-point latents at ``level``: clipped to
        +-``clamps["y"]``, then ``head.ys`` into int16 codes of +-``clamps["ys"]``."""
        mult, shift = self.heads["ys.mult"][level], self.heads["ys.shift"][level]
        cy, cys = self.clamps["y"], self.clamps["ys"]
        return lambda y: self.k.requantize_clamped(y, cy, mult, shift, -cys, cys, np.int16)

    def _pixel_rows(self, rows, lo, pixels):
        """A band's pixel rows ``lo ..`` (the last of ``_synthesis_steps``, cropped to the
        width of ``pixels`` already) into ``pixels`` (height, width, 3), cropped to its
        height."""
        height = pixels.shape[0]
        if lo < height:
            # In parallel over the rows (a numpy assignment ran on one thread: 0.9 ms of a
            # 1920x1080 decode); the band's rows are C-contiguous, and so is a prefix of them.
            rows = np.ascontiguousarray(rows[: height - lo])
            if self.k is reference:  # the plain numpy network stays plain numpy
                pixels[lo: lo + len(rows)] = rows
                return
            # Imported here: ``qlic info`` reads model files through this module without Numba.
            from .slicekernels import copy_channels
            copy_channels(rows, 0, 3, pixels, lo, 0)

    def analysis(self, pixels: np.ndarray, level: int, band_rows: int | None = None):
        """uint8 (H, W, 3), any size -> (fixed-point y_g int32, z int32) of the image padded
        to multiples of 64 (``padding.pad_to_multiple``).

        g_a and h_a run in bands of ``band_rows`` output rows (None: as many as the memory
        budget of ``bands.BAND_BYTES`` allows), padding the image band by band, so that no
        tensor at the image's resolution exists; the result does not depend on the bands.
        """
        cy = self.clamps["y"]
        y_g = np.empty(self._latent_shape(pixels), np.int32)

        def heads(lo, acc_y):
            y_g[lo: lo + len(acc_y)] = self._head(acc_y, "y", level, -cy, cy)

        return y_g, self._analyse_in_bands(pixels, heads, band_rows)

    def analysis_accumulators(self, pixels: np.ndarray, band_rows: int | None = None):
        """The part of the analysis that no quality level changes: uint8 (H, W, 3), any size
        -> (g_a's int32 accumulators of y (H/16, W/16, M) of the padded image, z int32).

        The hyper-analysis reads the un-gained y, so z is the same at every level; an
        encoder that tries several levels runs this once and ``y_head`` per level. It keeps
        the accumulators whole (4 bytes per latent), where ``analysis`` keeps only y_g.
        """
        acc_y = np.empty(self._latent_shape(pixels), np.int32)

        def keep(lo, acc):
            acc_y[lo: lo + len(acc)] = acc

        return acc_y, self._analyse_in_bands(pixels, keep, band_rows)

    def _latent_shape(self, pixels):
        height, width = pixels.shape[:2]
        return (-(-height // _BLOCK) * 4, -(-width // _BLOCK) * 4, self.M)

    def _analyse_in_bands(self, pixels, take_acc_y, band_rows) -> np.ndarray:
        """g_a then h_a in bands; ``take_acc_y(lo, acc_y)`` gets g_a's accumulators from row
        ``lo`` on as they come. Returns z."""
        rows, cols = (-(-n // _BLOCK) * _BLOCK for n in pixels.shape[:2])
        cz = self.clamps["z"]
        ha_in = np.empty(self._latent_shape(pixels), np.int8)

        def heads(lo, acc_y):
            take_acc_y(lo, acc_y)
            # |acc_y| < 2**31 and |offset| <= 2**30: the difference is exact in int64;
            # clamping it to int32 only saturates codes that are already at +-127.
            centred = np.clip(acc_y.astype(np.int64) - self.heads["ha_in.offset"],
                              -(2**31), 2**31 - 1).astype(np.int32)
            ha_in[lo: lo + len(acc_y)] = self._head(centred, "ha_in", None, -127, 127)

        self._in_bands("g_a", (rows, cols, 3), 1,
                       lambda a, b: padded_codes(pixels, a, b, _BLOCK), heads, band_rows)
        z = np.empty((rows // _BLOCK, cols // _BLOCK, self.N), np.int32)

        def z_head(lo, acc_z):
            z[lo: lo + len(acc_z)] = self._head(acc_z, "z", None, -cz, cz)

        self._in_bands("h_a", ha_in.shape, 1, lambda a, b: ha_in[a:b], z_head, band_rows)
        return z

    def y_head(self, acc_y: np.ndarray, level: int) -> np.ndarray:
        """g_a's accumulators -> fixed-point y_g = y * gain of ``level`` (int32)."""
        cy = self.clamps["y"]
        return self._head(acc_y, "y", level, -cy, cy)

    @property
    def index_dtype(self):
        """The scale indexes' dtype: the narrowest that holds ``y_levels`` (they are stored
        for the whole image while the symbols are coded)."""
        return np.uint8 if self.y_levels <= 256 else np.uint16

    def hyper_synthesis(self, z: np.ndarray, level: int, band_rows: int | None = None,
                        means: bool = True):
        """z int32 (h, w, N) -> (fixed-point mean_g int32 (4h, 4w, M), scale index
        (``index_dtype``)).

        h_s runs in bands (``band_rows`` as for ``analysis``): its 2M channels of int32
        accumulators never exist whole. ``means`` False returns None for ``mean_g``
        (``synthesis_of_symbols`` computes the means again, band by band)."""
        index = np.empty((4 * z.shape[0], 4 * z.shape[1], self.M), self.index_dtype)
        mean_g = np.empty(index.shape, np.int32) if means else None

        def store(lo, mean_rows, index_rows):
            if mean_g is not None:
                mean_g[lo: lo + len(mean_rows)] = mean_rows
            index[lo: lo + len(index_rows)] = index_rows

        self.hyper_synthesis_rows(z, level, store, band_rows)
        return mean_g, index

    def hyper_synthesis_rows(self, z: np.ndarray, level: int, write_rows,
                             band_rows: int | None = None) -> None:
        """``hyper_synthesis`` band by band: ``write_rows(lo, mean_g, index)`` takes the rows
        from ``lo`` on, so that a caller can use them without keeping them."""
        z16 = self._z_codes(z)

        def heads(lo, acc):
            # A few rows at a time: the heads' copies and int64 arithmetic stay small.
            step = max(1, _HEAD_ELEMENTS // (acc.shape[1] * self.M))
            for a in range(0, len(acc), step):
                write_rows(lo + a, *self._hyper_heads(acc[a: a + step], level))

        self._in_bands("h_s", z16.shape, 2, lambda a, b: z16[a:b], heads, band_rows)

    def hyper_accumulators(self, z: np.ndarray, band_rows: int | None = None) -> np.ndarray:
        """z int32 (h, w, N) -> h_s's int32 accumulators (4h, 4w, 2M), whole: the same at
        every level (h_s predicts un-gained parameters). For an encoder that tries several
        levels and for the channel-conditional model, whose slices read them all."""
        z16 = self._z_codes(z)
        acc_p = np.empty((4 * z.shape[0], 4 * z.shape[1], 2 * self.M), np.int32)

        def keep(lo, acc):
            acc_p[lo: lo + len(acc)] = acc

        self._in_bands("h_s", z16.shape, 2, lambda a, b: z16[a:b], keep, band_rows)
        return acc_p

    def hyper_accumulator_rows(self, z: np.ndarray, write_rows, elements: int,
                               band_rows: int | None = None) -> None:
        """``hyper_accumulators`` band by band: ``write_rows(lo, acc)`` takes the rows from
        ``lo`` on, at most ``elements`` int32 at a time, so that they never exist whole."""
        z16 = self._z_codes(z)
        self._in_bands("h_s", z16.shape, 2, lambda a, b: z16[a:b],
                       bands.in_pieces(write_rows, elements), band_rows)

    def hyper_heads(self, acc: np.ndarray, level: int):
        """h_s's accumulators -> (fixed-point mean_g int32, scale index) of ``level``."""
        return self._hyper_heads(acc, level)

    def _z_codes(self, z):
        cz = self.clamps["z"]
        # Decoded z comes from the stream: clamp it to the range the overflow proof assumes.
        return np.clip(z, -cz, cz).astype(np.int16)

    def _hyper_heads(self, acc, level):
        """h_s accumulators -> (fixed-point mean_g, scale index)."""
        index = self.k.scale_index(np.ascontiguousarray(acc[..., self.M:]),
                                   self.heads["scale.mult"], self.heads["scale.offset"][level],
                                   self.scale_shift, self.y_levels)
        return self._mean_head(acc, level), index

    def _mean_head(self, acc, level):
        cy = self.clamps["y"]
        return self._head(np.ascontiguousarray(acc[..., :self.M]), "mean", level, -cy, cy)

    def code_latents(self, y_g: np.ndarray, z: np.ndarray, level: int, means: bool = False,
                     band_rows: int | None = None, rounding=None):
        """The encoder's half of the hyperprior: -> (symbols, scale index, mean_g or None).

        The symbols (``symbols``, then ``rounding`` if given: an ``rdoq.Rounding``) overwrite
        ``y_g`` band by band as h_s predicts the means, so that neither the means (unless
        ``means``) nor a second latent tensor exists whole."""
        index = np.empty(y_g.shape, self.index_dtype)
        mean_g = np.empty(y_g.shape, np.int32) if means else None

        def code(lo, mean_rows, index_rows):  # a few rows at a time
            rows = slice(lo, lo + len(mean_rows))
            symbols = self.symbols(y_g[rows], mean_rows)
            if rounding is not None:
                rounding(symbols, y_g[rows], mean_rows, index_rows)
            y_g[rows] = symbols
            index[rows] = index_rows
            if mean_g is not None:
                mean_g[rows] = mean_rows

        self.hyper_synthesis_rows(z, level, code, band_rows)
        return y_g, index, mean_g

    def symbols(self, y_g: np.ndarray, mean_g: np.ndarray) -> np.ndarray:
        """The coded integers ``round(y_g - mean_g)`` of fixed-point latents, halves rounded
        toward zero.

        A latent exactly halfway between two symbols is as far from either, so the
        reconstruction error is the same; the symbol nearer the mean is the more probable one
        under the zero-mean tables, so it costs fewer bits. With ``mean_bits`` = 8 about one
        latent in 256 is such a tie, and rounding them up instead cost 0.4-0.6% of the rate
        at low qualities. Only the encoder runs this: decoders read the symbols.
        """
        diff = y_g.astype(np.int64) - mean_g
        if self.mean_bits:
            bias = (1 << (self.mean_bits - 1)) - 1
            mag = (np.abs(diff) + bias) >> self.mean_bits
            diff = np.where(diff < 0, -mag, mag)
        return diff.astype(np.int32)

    def reconstruct(self, symbols: np.ndarray, mean_g: np.ndarray) -> np.ndarray:
        """Fixed-point ``y_g_hat = symbol + mean_g``, clamped (symbols may come from a hostile
        stream, so the arithmetic is int64 and the result is clamped to the proven range)."""
        return self.k.reconstruct(symbols, mean_g, self.mean_bits, self.clamps["y"])

    def synthesis(self, y_g: np.ndarray, level: int, band_rows: int | None = None,
                  size: tuple | None = None) -> np.ndarray:
        """Fixed-point y_g_hat int32 (h, w, M) -> uint8 pixels (16h, 16w, 3), or cropped to
        ``size`` (height, width) as the bands are written.

        g_s runs in bands of ``band_rows`` pixel rows (None: from the memory budget of
        ``bands.BAND_BYTES``), each written straight into the result."""
        height, width = size or (16 * y_g.shape[0], 16 * y_g.shape[1])
        pixels = np.empty((height, width, 3), np.uint8)

        codes_of = self._latent_codes(level)

        def codes(a, b):
            return codes_of(y_g[a:b])

        def pixel_rows(lo, rows):
            self._pixel_rows(rows, lo, pixels)

        self._in_bands("g_s", y_g.shape, 2, codes, pixel_rows, band_rows,
                       self._synthesis_steps(width))
        return pixels

    def synthesis_band_rows(self, z_shape: tuple) -> int:
        """Pixel rows per band of the synthesis of an image whose z has ``z_shape``."""
        h, w = 4 * z_shape[0], 4 * z_shape[1]
        return self.band_height(self.layers["g_s"], h, w, self.M, 2)

    def band_height(self, layers: list, rows: int, width: int, channels: int,
                    in_bytes: int) -> int:
        """``bands.band_height`` of a list of this network's layers, planned once per shape
        and budget (planning took about 20 microseconds per transform and decode)."""
        key = (id(layers), rows, width, channels, in_bytes, bands.BAND_BYTES)
        found = self._band_heights.get(key)
        # The list itself is kept with its plan, so that its id stays its own.
        if found is not None and found[0] is layers:
            return found[1]
        if len(self._band_heights) >= _BAND_PLANS:
            self._band_heights.clear()
        height = bands.band_height(layers, rows, width, channels, in_bytes)
        self._band_heights[key] = (layers, height)
        return height

    def synthesis_of_symbols(self, symbols: np.ndarray, mean_g: np.ndarray | None,
                             z: np.ndarray, level: int, band_rows: int | None = None,
                             size: tuple | None = None) -> np.ndarray:
        """``synthesis(reconstruct(symbols, mean_g))`` band by band; with ``mean_g`` None, h_s
        computes each band's means again from ``z``, so that they never exist whole (it
        costs a second h_s, worth it only for images that need several bands). ``size``
        (height, width) crops the pixels as the bands are written (``padding.crop``), so
        that the padded image is never copied."""
        if band_rows is None:
            band_rows = self.synthesis_band_rows(z.shape)
        z16 = self._z_codes(z) if mean_g is None else None
        rows = symbols.shape[0]

        def y_rows(a, b):
            if mean_g is not None:
                return self.reconstruct(symbols[a:b], mean_g[a:b])
            acc = bands.run_rows(self._run_layer, self.steps["h_s"], z16.shape[0],
                                 lambda c, d: z16[c:d], a, b)
            return self.reconstruct(symbols[a:b], self._mean_head(acc, level))

        height, width = size or (16 * rows, 16 * symbols.shape[1])
        pixels = np.empty((height, width, 3), np.uint8)

        def pixel_rows(lo, rows):
            self._pixel_rows(rows, lo, pixels)

        codes_of = self._latent_codes(level)

        def codes(a, b):
            # reconstruct() clamped to +-clamps["y"] already: the clip is a no-op here.
            return codes_of(y_rows(a, b))

        bands.run(self._run_layer, self._synthesis_steps(width), rows, codes, pixel_rows,
                  band_rows, join_into=self._run_layer_joined, reuse=True)
        return pixels
