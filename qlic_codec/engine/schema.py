"""The keys a version-3 model manifest may hold, at every level, and their JSON types.

A reader that met a key it does not know could only guess what it changes, and a wrong guess
is wrong pixels; so every key outside this schema is refused, wherever it is, except inside
``card`` (free-form documentation that decoding never reads). ``docs/FORMAT.md`` section 2
is the same schema in words; ranges and the relations between values are checked by
``graph.IntegerNetwork`` after this.

Types: ``int`` is a JSON integer (not a boolean, not a number with a fraction or an exponent),
``num`` a finite JSON number, ``bool``, ``str``, ``obj``, ``list``; ``?`` after a type also
allows ``null``.
"""

import math

from ..errors import ModelFileError

FORMAT_NAME = "qlic-model"
METRICS = ("mse", "msssim")
TRANSFORMS = ("g_a", "h_a", "h_s", "g_s")

# key: (type, required)
TOP_LEVEL = {
    "format": ("str", True), "N": ("int", True), "M": ("int", True), "levels": ("int", True),
    "metric": ("str", True), "leaky": ("list", True), "mean_bits": ("int", True),
    "clamps": ("obj", True), "scale_shift": ("int", True), "y_levels": ("int", True),
    "transforms": ("obj", True), "scale_table": ("obj", False), "card": ("obj", False),
    # Sub-levels per unit of quality (fractional quality in the stream's header).
    "quality_steps": ("int", False),
    # A channel-conditional entropy model for y, checked by the code that runs it.
    "cc": ("obj", False),
}
CLAMPS = {"y": ("int", True), "z": ("int", True), "ys": ("int", True)}
SCALE_TABLE = {"min": ("num", True), "max": ("num", True), "levels": ("int", True)}
_CONV = {"name": ("str", True), "op": ("str", True), "in_max": ("int", True),
         "stride": ("int", False), "pad_value": ("int", False), "out": ("obj?", False)}
LAYERS = {
    "conv": _CONV,
    "deconv": _CONV,
    "gdn": {"name": ("str", True), "op": ("str", True), "shift": ("int", True),
            "out_max": ("int", False)},
    "igdn": {"name": ("str", True), "op": ("str", True), "out_max": ("int", False)},
}
OUT = {"lo": ("int", True), "hi": ("int", True), "leaky": ("bool", False)}
# The channel-conditional entropy model (``engine.slices``): channels per slice, and per slice
# its parameter and latent-residual networks as layer lists, and (format 3) the largest
# context code (127 when absent: 8-bit codes).
CC = {"slices": ("list", True), "networks": ("list", True), "ctx_max": ("int", False)}
CC_NETWORKS = {"params": ("list", True), "lrp": ("list", True)}


def check_cc(cc: dict) -> None:
    """Keys and types of a ``cc`` object (sizes and shapes: ``engine.slices``)."""
    problem = "model 'cc' section is malformed"
    _check_keys(cc, CC, " in 'cc'", problem)
    if not all(_is(v, "int") for v in cc["slices"]):
        raise ModelFileError(f"{problem}: 'slices' must be a list of integers")
    for i, pair in enumerate(cc["networks"]):
        if not isinstance(pair, dict):
            raise ModelFileError(f"{problem}: network {i} is not an object")
        _check_keys(pair, CC_NETWORKS, f" in 'cc' network {i}", problem)
        for d in pair["params"] + pair["lrp"]:
            _check_layer(d, f"cc network {i}")


def _is(value, kind: str) -> bool:
    if kind.endswith("?"):
        return value is None or _is(value, kind[:-1])
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "num":
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    return isinstance(value, {"bool": bool, "str": str, "obj": dict, "list": list}[kind])


_TYPE_NAMES = {"int": "an integer", "num": "a finite number", "bool": "true or false",
               "str": "a string", "obj": "an object", "list": "a list"}


def _check_keys(obj: dict, schema: dict, where: str, problem: str) -> None:
    """Unknown keys, missing required keys and wrong types of ``obj``; ``problem`` starts the
    message of a missing or mistyped key (the callers' wording for a malformed manifest)."""
    for key in obj:
        if key not in schema:
            raise ModelFileError(f"model manifest has unknown key {str(key)[:40]!r}{where}; "
                                 "the model needs a newer qlic")
    for key, (kind, required) in schema.items():
        if key not in obj:
            if required:
                raise ModelFileError(f"{problem}: missing key {key!r}{where}")
        elif not _is(obj[key], kind):
            name = _TYPE_NAMES[kind.rstrip("?")] + (" or null" if kind.endswith("?") else "")
            raise ModelFileError(f"{problem}: {key!r}{where} must be {name}")


def _check_layer(d, transform: str) -> None:
    problem = "model layer description is malformed"
    if not isinstance(d, dict) or not isinstance(d.get("name"), str) \
            or not isinstance(d.get("op"), str):
        raise ModelFileError(f"model layer without a name or op in '{transform}'")
    name, op = d["name"][:40], d["op"][:40]
    if op not in LAYERS:
        raise ModelFileError(f"layer {name!r} has unknown op {op!r}")
    _check_keys(d, LAYERS[op], f" in layer {name!r}", problem)
    if d.get("out") is not None:
        _check_keys(d["out"], OUT, f" in the 'out' of layer {name!r}", problem)


def check_manifest(manifest: dict, check_cc=None) -> None:
    """Refuses a manifest with an unknown, missing or mistyped key at any level.

    Args:
        manifest: the decoded JSON manifest.
        check_cc: validates the ``cc`` object, or None where this qlic cannot run a
            channel-conditional model (a manifest with ``cc`` is then refused: decoding it
            with the plain hyperprior would give wrong pixels).

    Raises:
        ModelFileError: one line naming the key (and the layer).
    """
    problem = "model manifest is incomplete or malformed"
    if not isinstance(manifest, dict):
        raise ModelFileError(f"{problem}: the manifest is not an object")
    _check_keys(manifest, TOP_LEVEL, "", problem)
    if manifest["format"] != FORMAT_NAME:
        raise ModelFileError(f"{problem}: 'format' is {manifest['format'][:40]!r}, "
                             f"expected {FORMAT_NAME!r}")
    if manifest["metric"] not in METRICS:
        raise ModelFileError(f"unknown metric {manifest['metric'][:40]!r} in the model "
                             f"manifest (expected one of {', '.join(METRICS)})")
    leaky = manifest["leaky"]
    if len(leaky) != 2 or not all(_is(v, "int") for v in leaky):
        raise ModelFileError(f"{problem}: 'leaky' must be a list of two integers")
    _check_keys(manifest["clamps"], CLAMPS, " in 'clamps'", problem)
    if "scale_table" in manifest:
        _check_keys(manifest["scale_table"], SCALE_TABLE, " in 'scale_table'", problem)
    if manifest.get("quality_steps", 1) < 1:
        raise ModelFileError(f"{problem}: 'quality_steps' must be at least 1")
    transforms = manifest["transforms"]
    _check_keys(transforms, {t: ("list", True) for t in TRANSFORMS}, " in 'transforms'",
                problem)
    for t in TRANSFORMS:
        for d in transforms[t]:
            _check_layer(d, t)
    if "cc" in manifest:
        if check_cc is None:
            raise ModelFileError("the model uses a channel-conditional entropy model ('cc'), "
                                 "which this qlic cannot decode; upgrade qlic")
        check_cc(manifest["cc"])
