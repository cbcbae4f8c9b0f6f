"""The ``.qlicm`` model file (FORMAT.md sections 1 and 2): layout, manifest schema, model id."""

import hashlib
import json
import math
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"QLICMDL\0"
VERSION = 3
# Format 2 is format 3 without cc.ctx_max (FORMAT.md 1.1).
VERSIONS = (2, 3)
DTYPES = ("int8", "uint8", "int16", "int32", "int64")


class FormatError(ValueError):
    """The file breaks a MUST of docs/FORMAT.md."""


@dataclass
class Model:
    manifest: dict
    arrays: dict
    model_id: bytes


def _no_constant(name):
    raise FormatError(f"{name} is not JSON")


def read_model(data: bytes) -> Model:
    if len(data) < 16 + 32 or data[:8] != MAGIC:
        raise FormatError("not a model file")
    version, json_len = struct.unpack_from("<II", data, 8)
    if version not in VERSIONS:
        raise FormatError(f"model format {version} is not supported")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise FormatError("SHA-256 mismatch")
    if 16 + json_len > len(data) - 32:
        raise FormatError("JSON length out of range")
    try:
        header = json.loads(data[16:16 + json_len].decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"bad JSON: {exc}") from None
    if not isinstance(header, dict) or set(header) != {"manifest", "arrays"}:
        raise FormatError("the JSON must be an object with 'manifest' and 'arrays'")
    manifest, entries = header["manifest"], header["arrays"]
    start = 16 + json_len + (-(16 + json_len) % 8)
    payload = data[start:-32]
    arrays, spans = {}, []
    for name, e in entries.items():
        if not isinstance(e, dict) or e.get("dtype") not in DTYPES:
            raise FormatError(f"bad entry for array {name!r}")
        shape, offset = e.get("shape"), e.get("offset")
        if not isinstance(shape, list) or len(shape) > 4 or not all(
                _is_int(s) and s >= 0 for s in shape) or not _is_int(offset):
            raise FormatError(f"bad entry for array {name!r}")
        dtype = np.dtype(e["dtype"]).newbyteorder("<")
        nbytes = math.prod(shape) * dtype.itemsize
        if offset < 0 or offset % 8 or offset + nbytes > len(payload):
            raise FormatError(f"array {name!r} lies outside the payload")
        spans.append((offset, offset + nbytes))
        arrays[name] = np.frombuffer(payload, dtype, math.prod(shape), offset).reshape(shape)
    spans.sort()
    if any(b[0] < a[1] for a, b in zip(spans, spans[1:])):
        raise FormatError("arrays overlap")
    check_manifest(manifest)
    if version == 2 and "ctx_max" in manifest.get("cc", {}):
        raise FormatError("cc.ctx_max in a format-2 model")
    extra = sorted(set(arrays) - expected_arrays(manifest))
    if extra:
        raise FormatError(f"array {extra[0]!r} is not one the manifest calls for")
    model = Model(manifest, arrays, model_id(manifest, arrays))
    if "cc" in manifest:
        from .slices import check  # imported here: slices reads this module's types
        check(model)
    return model


# The arrays of a layer by op (FORMAT.md 2.2), those of a layer with an ``out`` added.
_LAYER_ARRAYS = {"conv": ("weight", "bias"), "deconv": ("weight", "bias"),
                 "gdn": ("gamma", "beta", "mult"), "igdn": ("gamma", "beta", "mult", "shift")}


def expected_arrays(m: dict) -> set:
    """The names of every array the manifest calls for (FORMAT.md 2.2, 2.3 and 2.6)."""
    layers = [d for t in ("g_a", "h_a", "h_s", "g_s") for d in m["transforms"][t]]
    cc = m.get("cc")
    if cc:
        layers += [d for pair in cc["networks"] for d in pair["params"] + pair["lrp"]]
    names = set()
    for d in layers:
        parts = _LAYER_ARRAYS.get(d["op"], ())
        if d["op"] in ("conv", "deconv") and d.get("out") is not None:
            parts += ("mult", "shift")
        names |= {f"{d['name']}.{p}" for p in parts}
    for key in ("y", "mean", "ys", "ha_in", "z", "pixel"):
        names |= {f"head.{key}.mult", f"head.{key}.shift"}
    names |= {"head.ha_in.offset", "head.scale.mult", "head.scale.offset"}
    names |= {f"entropy.{k}.{p}" for k in ("z", "y") for p in ("cdf_counts", "sizes", "offsets")}
    if cc:
        names |= {f"cc.{k}.{p}" for k in ("hyper", "ctx") for p in ("mult", "shift")}
        for i in range(len(cc["slices"])):
            names |= {f"cc.{i}.{k}.{p}" for k in ("mean", "lrp") for p in ("mult", "shift")}
            names.add(f"cc.{i}.scale.mult")
        names.add("cc.lrp.lut")
    return names


def model_id(manifest: dict, arrays: dict) -> bytes:
    """FORMAT.md 1.4."""
    def item(b):
        return struct.pack("<Q", len(b)) + b

    text = json.dumps({k: v for k, v in manifest.items() if k != "card"}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    parts = [item(text.encode("ascii")), struct.pack("<Q", len(arrays))]
    for name in sorted(arrays):
        a = arrays[name]
        parts += [item(name.encode("utf-8")), item(a.dtype.name.encode("ascii")),
                  struct.pack("<Q", a.ndim), b"".join(struct.pack("<Q", d) for d in a.shape),
                  item(a.astype(a.dtype.newbyteorder("<")).tobytes())]
    return hashlib.sha256(b"".join(parts)).digest()[:8]


# ---------------------------------------------------------------------------------------------
# The manifest schema (FORMAT.md section 2): every key known, of its type.

def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


TYPES = {"int": _is_int, "num": _is_num, "bool": lambda v: isinstance(v, bool),
         "str": lambda v: isinstance(v, str), "obj": lambda v: isinstance(v, dict),
         "list": lambda v: isinstance(v, list),
         "obj?": lambda v: v is None or isinstance(v, dict)}
TOP = {"format": "str!", "N": "int!", "M": "int!", "levels": "int!", "metric": "str!",
       "leaky": "list!", "mean_bits": "int!", "clamps": "obj!", "scale_shift": "int!",
       "y_levels": "int!", "transforms": "obj!", "scale_table": "obj", "card": "obj",
       "quality_steps": "int", "cc": "obj"}
CONV = {"name": "str!", "op": "str!", "in_max": "int!", "stride": "int", "pad_value": "int",
        "out": "obj?"}
LAYER = {"conv": CONV, "deconv": CONV,
         "gdn": {"name": "str!", "op": "str!", "shift": "int!", "out_max": "int"},
         "igdn": {"name": "str!", "op": "str!", "out_max": "int"}}
OUT = {"lo": "int!", "hi": "int!", "leaky": "bool"}
CC = {"slices": "list!", "networks": "list!", "ctx_max": "int"}
CC_NETWORK = {"params": "list!", "lrp": "list!"}


def _keys(obj, schema, where):
    if not isinstance(obj, dict):
        raise FormatError(f"{where} is not an object")
    for key in obj:
        if key not in schema:
            raise FormatError(f"unknown key {key!r} in {where}")
    for key, kind in schema.items():
        if key not in obj:
            if kind.endswith("!"):
                raise FormatError(f"missing key {key!r} in {where}")
        elif not TYPES[kind.rstrip("!")](obj[key]):
            raise FormatError(f"{key!r} in {where} has the wrong type")


def check_manifest(m) -> None:
    _keys(m, TOP, "the manifest")
    if m["format"] != "qlic-model" or m["metric"] not in ("mse", "msssim"):
        raise FormatError("bad format or metric")
    if len(m["leaky"]) != 2 or not all(_is_int(v) for v in m["leaky"]):
        raise FormatError("bad leaky")
    _keys(m["clamps"], {"y": "int!", "z": "int!", "ys": "int!"}, "clamps")
    if "scale_table" in m:
        _keys(m["scale_table"], {"min": "num!", "max": "num!", "levels": "int!"}, "scale_table")
    if m.get("quality_steps", 1) < 1:
        raise FormatError("quality_steps below 1")
    _keys(m["transforms"], {t: "list!" for t in ("g_a", "h_a", "h_s", "g_s")}, "transforms")
    layer_lists = list(m["transforms"].values())
    if "cc" in m:
        _keys(m["cc"], CC, "cc")
        for i, pair in enumerate(m["cc"]["networks"]):
            _keys(pair, CC_NETWORK, f"cc network {i}")
            layer_lists += [pair["params"], pair["lrp"]]
    for layers in layer_lists:
        for d in layers:
            if not isinstance(d, dict) or d.get("op") not in LAYER:
                raise FormatError(f"unknown layer op in {d!r:.60}")
            _keys(d, LAYER[d["op"]], f"layer {d.get('name')!r}")
            if d.get("out") is not None:
                _keys(d["out"], OUT, f"the out of layer {d['name']!r}")
