"""The float decoder network in ONNX Runtime, fp32 and statically quantized to int8: a peer for
``speed.py``.

The exported graph is what ``speed.py`` times in PyTorch: ``h_s(z_hat)`` and ``g_s(y_hat)``,
from the latents to the hyper-parameters and the image, with the height and width of both
inputs dynamic so that one file serves every image size. The int8 graph comes from ONNX
Runtime's own tools (``quantize_static``: QDQ format, int8 per-channel weights, uint8
activations calibrated by min/max on the latents of a few training crops).

``run_session`` is what ``speed.py``'s child processes call: one session with the row's
intra-op threads and one inter-op thread, the best of ``repeat`` runs after a warm-up.
"""

import time
from pathlib import Path

import numpy as np

# ONNX Runtime opset 17 has every op of the decoder (ConvTranspose, Abs, LeakyRelu).
OPSET = 17
CALIBRATION_CROP = 256  # a multiple of 64: the analysis block


def decoder_module(model):
    """The decoder of a ``MeanScaleHyperprior`` as one module: (z_hat, y_hat) -> (params, x_hat)."""
    import torch

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.h_s, self.g_s = model.h_s, model.g_s

        def forward(self, z_hat, y_hat):
            return self.h_s(z_hat), self.g_s(y_hat)

    return Decoder().eval()


def phase_deconv(deconv):
    """A 5x5 stride-2 ``ConvTranspose2d`` (padding 2, output padding 1) as one 3x3 convolution
    to four sub-pixel phases followed by a pixel shuffle: the same function.

    ONNX Runtime's CPU provider has no int8 transposed convolution, so a quantized
    ``ConvTranspose`` runs in float between a dequantize and a quantize; in this form every
    multiply of the synthesis is an int8 ``QLinearConv`` (the integer engine splits its
    transposed convolutions into the same four phases).

    Output row ``2m + a`` reads input rows ``m - 1 .. m + 1`` through taps ``a + 4 - 2t``
    (t = 0, 1, 2) of the transposed kernel; tap 5 (phase 1, t = 0) does not exist and is zero.
    """
    import torch
    from torch import nn

    w = deconv.weight.detach()  # (Cin, Cout, 5, 5)
    if tuple(w.shape[2:]) != (5, 5) or deconv.stride != (2, 2) or deconv.padding != (2, 2):
        raise ValueError(f"phase_deconv takes 5x5 stride-2 padding-2 layers, not {deconv}")
    cin, cout = w.shape[:2]
    padded = torch.nn.functional.pad(w, (0, 1, 0, 1))  # tap 5 = 0
    taps = torch.tensor([[4, 2, 0], [5, 3, 1]])  # [phase][t] -> tap
    # (Cout, 2, 2, Cin, 3, 3): phase (a, b) of output channel c; pixel_shuffle wants the
    # channels ordered c * 4 + a * 2 + b.
    k = padded[:, :, taps[:, :, None, None], taps[None, None, :, :]]  # Cin,Cout,2,3,2,3
    k = k.permute(1, 2, 4, 0, 3, 5).reshape(cout * 4, cin, 3, 3)
    conv = nn.Conv2d(cin, cout * 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(k)
        conv.bias.copy_(deconv.bias.detach().repeat_interleave(4))
    return nn.Sequential(conv, nn.PixelShuffle(2))


def with_phase_deconvs(model):
    """A copy of ``model`` whose h_s and g_s transposed convolutions are ``phase_deconv``s."""
    import copy
    from torch import nn

    model = copy.deepcopy(model)
    for part in (model.h_s, model.g_s):
        for i, layer in enumerate(part):
            if isinstance(layer, nn.ConvTranspose2d):
                part[i] = phase_deconv(layer)
    return model


def export_decoder(model, path, z_example, y_example) -> Path:
    """Write the decoder of ``model`` to ``path`` as ONNX, height and width dynamic.

    The simplified GDN is plain ops (abs, a 1x1 convolution, a multiply); its ``gamma`` and
    ``beta`` are functions of parameters that the exporter folds into constants, so the graph
    needs no export-only rewrite. The TorchScript exporter (``dynamo=False``) is used because
    the dynamo one needs ``onnxscript``, which is not part of the ``bench`` extra.
    """
    import torch

    path = Path(path)
    dynamic = {"z_hat": {2: "z_height", 3: "z_width"}, "y_hat": {2: "y_height", 3: "y_width"},
               "params": {2: "z4_height", 3: "z4_width"}, "x_hat": {2: "height", 3: "width"}}
    with torch.no_grad():
        torch.onnx.export(decoder_module(model), (z_example, y_example), str(path),
                          input_names=["z_hat", "y_hat"], output_names=["params", "x_hat"],
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    return path


def latents(model, images, level):
    """(z_hat, y_hat) float32 arrays of each image (H x W x 3 uint8, sides multiples of 64),
    as the PyTorch peer makes them: z rounded, y rounded at the level's gain."""
    import torch

    out = []
    with torch.no_grad():
        lv = torch.tensor([float(level)])
        for rgb in images:
            x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
            y = model.g_a(x)
            z_hat = torch.round(model.h_a(y))
            gain = model.gains(lv)[:, :, None, None]
            y_hat = torch.round(y * gain) / gain
            out.append((z_hat.numpy(), y_hat.numpy()))
    return out


def calibration_crops(folder, count, crop=CALIBRATION_CROP):
    """Centre crops of the first ``count`` PNGs (sorted by name) of ``folder`` that are at least
    ``crop`` pixels on each side."""
    from PIL import Image

    crops = []
    for png in sorted(Path(folder).glob("*.png")):
        with Image.open(png) as im:
            rgb = np.asarray(im.convert("RGB"))
        h, w = rgb.shape[:2]
        if h < crop or w < crop:
            continue
        top, left = (h - crop) // 2, (w - crop) // 2
        crops.append(rgb[top:top + crop, left:left + crop])
        if len(crops) == count:
            break
    if not crops:
        raise ValueError(f"no PNG of at least {crop}x{crop} in {folder}: give a training folder")
    return crops


def quantize_decoder(fp32_path, int8_path, calibration):
    """Quantize the fp32 graph statically with ONNX Runtime's tools: QDQ, int8 per-channel
    weights, uint8 activations from min/max calibration on ``calibration``, a list of
    (z_hat, y_hat) arrays."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Latents(CalibrationDataReader):
        def __init__(self):
            self._items = iter(calibration)

        def get_next(self):
            item = next(self._items, None)
            return None if item is None else {"z_hat": item[0], "y_hat": item[1]}

    # ONNX Runtime's recommended pre-processing (shape inference, graph optimisation) first,
    # so that the quantizer sees the fused graph the session will run.
    pre = Path(int8_path).with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre))
    quantize_static(str(pre), str(int8_path), Latents(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    pre.unlink()
    return Path(int8_path)


def session(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(path, inputs, threads, repeat):
    """Seconds of the best of ``repeat`` runs (after one warm-up) of the graph at ``path`` on
    ``inputs`` (name -> array), and its last outputs."""
    sess = session(path, threads)
    outputs = sess.run(None, inputs)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        outputs = sess.run(None, inputs)
        best = min(best, time.perf_counter() - t)
    return best, outputs


def psnr(a, b):
    """PSNR in dB of two images in [0, 1] (clipped, on the 0-255 scale)."""
    a = np.clip(np.asarray(a, np.float64), 0, 1) * 255
    b = np.clip(np.asarray(b, np.float64), 0, 1) * 255
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)
