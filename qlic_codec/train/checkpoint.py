"""Training checkpoints (resumable, full precision) and compact fp16 model checkpoints."""

import os
from pathlib import Path

import torch

from .model import MeanScaleHyperprior
from .slices import ChannelConditionalHyperprior


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def model_config(model: MeanScaleHyperprior) -> dict:
    config = {"N": model.N, "M": model.M, "levels": model.levels}
    if isinstance(model, ChannelConditionalHyperprior):
        config.update(slices=list(model.slices), hidden=model.hidden,
                      checkerboard=model.checkerboard)
    if model.z_steps:
        config["z_steps"] = True
    return config


def build_model(config: dict) -> MeanScaleHyperprior:
    """The float model a ``model_config`` describes: with ``slices``, channel-conditional."""
    if config.get("slices"):
        return ChannelConditionalHyperprior(**config)
    return MeanScaleHyperprior(**config)


def save_float_model(model: MeanScaleHyperprior, path: Path, meta: dict) -> None:
    """Save the weights as fp16 with the architecture and training metadata."""
    state = {k: v.detach().to(torch.float16) for k, v in model.state_dict().items()}
    save_atomic({"config": model_config(model), "state_dict": state, "meta": meta}, path)


def load_float_model(path: Path) -> tuple[MeanScaleHyperprior, dict]:
    """Load a model saved by ``save_float_model`` or a training checkpoint, in float32."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in blob:
        config, state = blob["config"], blob["state_dict"]
    else:  # a training checkpoint: "config" there is the TrainConfig
        config, state = blob["model_config"], blob["model"]
    model = build_model(config)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.eval()
    return model, blob.get("meta", {})
