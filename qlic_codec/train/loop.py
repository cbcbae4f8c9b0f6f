"""The training loop: rate-distortion loss, periodic checkpoints, resume, validation."""

import math
import signal
import time
from dataclasses import dataclass, asdict, field
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .checkpoint import build_model, model_config, save_atomic, save_float_model
from .data import CropSampler, load_folder, to_tensor, wide_share_weights
from .losslog import LossLog
from .metrics import ms_ssim, psnr
from .model import MeanScaleHyperprior, MSE_LAMBDAS, MSSSIM_LAMBDAS, retarget_log_gains
from .widen import latent_channels, widen


@dataclass
class TrainConfig:
    run_dir: str
    data_root: str
    metric: str = "mse"
    steps: int = 200_000
    batch: int = 8
    crop: int = 128
    lr: float = 1e-4
    lr_drop_at: float = 0.9  # fraction of ``steps`` after which the rate is divided by 10
    # Steps of linear warm-up whenever the optimiser starts without its moments (a new run, or
    # one initialised from an fp16 model): Adam's first steps move every weight by the full
    # rate, which measurably set a trained model back (about 0.5 dB after 3 steps at 1e-4).
    warmup_steps: int = 200
    checkpoint_minutes: float = 5.0
    time_limit_minutes: float = 0.0  # 0 = no limit
    log_every: int = 100
    bf16: str = "auto"  # "auto": only where the CPU has native bf16 (AVX512-BF16 or AMX)
    device: str = "auto"
    seed: int = 0
    N: int = 128
    M: int = 192
    init_from: str = ""
    continue_run: bool = False  # with init_from: carry its step count and wall time on
    lambdas: tuple = field(default_factory=tuple)
    slices: tuple = field(default_factory=tuple)  # empty: the plain mean-scale hyperprior
    slice_hidden: int = 64
    checkerboard: bool = False
    # Minutes between validations of ``validation_sets`` into ``losses.csv`` of the run
    # (0: never); each writes the training loss per level since the last one too.
    validate_minutes: float = 0.0
    # Share of the crops drawn from the public photo sets (data.WIDE_PREFIXES); None: every
    # training image equally often.
    wide_share: float | None = None
    validation_sets: tuple = ("val", "val-wide")
    # Decay of an exponential moving average of the weights (0: none). At a small constant
    # learning rate the weights wander around the point they approach (a few tenths of a
    # point of BD-rate from one validation to the next); the average sits nearer it. It is
    # validated beside the weights (sets named "<set>-ema") and saved as model_ema_fp16.pt.
    ema_decay: float = 0.0
    # Learned per-level steps of z (model.MeanScaleHyperprior.z_step), with their own rate.
    z_steps: bool = False
    z_step_lr: float = 1e-3


def parameter_groups(model, cfg: TrainConfig) -> list[dict]:
    """The optimiser's groups: the z steps, if any, at ``z_step_lr`` (as a scale of ``lr``, so
    that the warm-up and the drop apply to them too), everything else at ``lr``."""
    steps = [p for n, p in model.named_parameters() if n == "log_z_step"]
    rest = [p for n, p in model.named_parameters() if n != "log_z_step"]
    groups = [{"params": rest}]
    if steps:
        groups.append({"params": steps, "lr_scale": cfg.z_step_lr / cfg.lr})
    return groups


def native_bf16() -> bool:
    """True where bf16 matmuls are fast. Without AVX512-BF16/AMX, bf16 autocast on CPU was
    measured 10x slower than fp32 (emulated conversions), so it is used only where native.

    PyTorch's capability string stops at "AVX512" on CPUs that also have AMX, so the CPU's own
    flags are read where the OS lists them (an AMX Xeon ran a 192x192 batch of 8 in 0.35-0.55 s
    with bf16 against 1.1-1.3 s in fp32)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if "AMX" in capability or "BF16" in capability:
        return True
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def rd_terms(model, x, level, lambdas, metric):
    """Per-image rate-distortion loss, bits per pixel and weighted distortion, each (B,)."""
    out = model(x, level)
    pixels = x.shape[2] * x.shape[3]
    bits = sum(-torch.log2(lik).flatten(1).sum(1) for lik in out["likelihoods"].values())
    bpp = bits / pixels
    x_hat = out["x_hat"].float()
    lam = lambdas[level.long()]
    if metric == "mse":
        mse = ((x_hat - x) ** 2).flatten(1).mean(1)
        distortion = lam * 255.0**2 * mse
    else:
        distortion = lam * (1 - ms_ssim(x_hat.clamp(0, 1), x))
    return distortion + bpp, bpp, distortion


def optimiser_step(model, opt, x, level, lambdas, metric, bf16: bool):
    """One step of training on a batch: the losses under bf16 autocast where ``bf16``, the
    gradients, clipping at norm 1.0 and ``opt``'s update. Returns the per-image losses and
    bits per pixel and the batch means of loss, bpp and weighted distortion (detached)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        losses, bpps, dists = rd_terms(model, x, level, lambdas, metric)
        loss = losses.mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return (losses.detach(), bpps.detach(),
            (loss.item(), bpps.mean().item(), dists.mean().item()))


def rd_loss(model, x, level, lambdas, metric):
    loss, bpp, distortion = rd_terms(model, x, level, lambdas, metric)
    return loss.mean(), bpp.mean().item(), distortion.mean().item()


@torch.no_grad()
def validate(model, images, levels=None, device="cpu", lambdas=None, metric="mse") -> list[dict]:
    """Estimated bpp (from likelihoods), PSNR and MS-SSIM per level, averaged over images;
    with ``lambdas``, also the rate-distortion loss that training minimises (on the pixels
    rounded to 8 bits, as a decoder delivers them)."""
    model.eval()
    levels = range(model.levels) if levels is None else levels
    rows = []
    for level in levels:
        bpp_sum = psnr_sum = msssim_sum = loss_sum = 0.0
        for image in images:
            x = to_tensor(image).to(device)
            h, w = x.shape[2:]
            ph, pw = (-h) % 64, (-w) % 64
            xp = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
            out = model(xp, torch.tensor([float(level)], device=device))
            x_hat = out["x_hat"][:, :, :h, :w].clamp(0, 1)
            x_hat = torch.round(x_hat * 255) / 255
            bits = sum(-torch.log2(l).sum().item() for l in out["likelihoods"].values())
            bpp_sum += bits / (h * w)
            psnr_sum += psnr(x_hat, x).item()
            score = ms_ssim(x_hat, x).item()
            msssim_sum += score
            if lambdas is not None:
                distortion = (255.0**2 * torch.mean((x_hat - x) ** 2).item() if metric == "mse"
                              else 1 - score)
                loss_sum += lambdas[level] * distortion + bits / (h * w)
        n = len(images)
        row = {"level": level + 1, "bpp": bpp_sum / n, "psnr": psnr_sum / n,
               "ms_ssim": msssim_sum / n}
        if lambdas is not None:
            row["loss"] = loss_sum / n
        rows.append(row)
    model.train()
    return rows


def train(cfg: TrainConfig, log=print) -> dict:
    """Train (or resume) the run in ``cfg.run_dir``; returns the final state summary."""
    if cfg.metric == "msssim" and cfg.crop < 161:
        raise ValueError(f"MS-SSIM needs crops of at least 161 px for its five scales, "
                         f"got --crop {cfg.crop}")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    torch.manual_seed(cfg.seed)
    lambdas_list = tuple(cfg.lambdas) or (MSE_LAMBDAS if cfg.metric == "mse" else MSSSIM_LAMBDAS)
    lambdas = torch.tensor(lambdas_list, device=device)
    config = {"N": cfg.N, "M": cfg.M, "levels": len(lambdas_list)}
    if cfg.slices:
        config.update(slices=list(cfg.slices), hidden=cfg.slice_hidden,
                      checkerboard=cfg.checkerboard)
    if cfg.z_steps:
        config["z_steps"] = True
    model = build_model(config).to(device)
    opt = torch.optim.Adam(parameter_groups(model, cfg), lr=cfg.lr)
    images = load_folder(Path(cfg.data_root) / "train")
    weights = (None if cfg.wide_share is None else
               wide_share_weights(Path(cfg.data_root) / "train", cfg.wide_share))
    sampler = CropSampler(images, cfg.crop, seed=cfg.seed, weights=weights)
    state = {"step": 0, "wall_seconds": 0.0, "history": []}
    fresh_optimizer = True
    saved_ema = None  # the weight average of the checkpoint resumed from, if it has one

    ckpt_path = run_dir / "last.pt"
    if ckpt_path.exists():
        blob = torch.load(ckpt_path, map_location=device, weights_only=False)
        saved = tuple(blob.get("config", {}).get("lambdas") or ())
        if saved and tuple(saved) != tuple(lambdas_list):
            raise ValueError(f"{ckpt_path} was trained with lambdas {list(saved)}, not "
                             f"{list(lambdas_list)}; resume it with the same --lambdas")
        had_steps = bool(blob.get("model_config", {}).get("z_steps", False))
        if had_steps != cfg.z_steps:
            raise ValueError(f"{ckpt_path} was trained {'with' if had_steps else 'without'} "
                             f"--z-steps; resume it the same way")
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])
        # The saved groups carry the rates of the run that saved them; this run's options
        # set them (a new --z-step-lr or --lr takes effect on resume).
        for group, fresh in zip(opt.param_groups, parameter_groups(model, cfg)):
            if "lr_scale" in fresh:
                group["lr_scale"] = fresh["lr_scale"]
        sampler.rng.bit_generator.state = blob["sampler_rng"]
        torch.set_rng_state(blob["torch_rng"])
        state = blob["state"]
        saved_ema = blob.get("ema")
        log(f"resumed {ckpt_path} at step {state['step']}")
        fresh_optimizer = False  # its moments (and any warm-up under way) were saved with it
    elif cfg.init_from:
        blob = torch.load(cfg.init_from, map_location=device, weights_only=True)
        meta = blob.get("meta", {})
        weights = {k: v.float() for k, v in blob["state_dict"].items()}
        init_lambdas = tuple(meta.get("lambdas") or lambdas_list)
        if meta.get("metric", cfg.metric) != cfg.metric:
            # An MSE lambda and an MS-SSIM lambda are in different units, so the tables cannot
            # be lined up by value: level k starts from level k (or its rank-interpolated
            # neighbours where the tables' lengths differ) and the new objective sets the rate.
            if len(init_lambdas) != len(lambdas_list):
                for key in ("log_gain", "log_z_step"):
                    if key in weights:
                        weights[key] = retarget_log_gains(
                            weights[key], np.geomspace(1, 2, len(init_lambdas)),
                            np.geomspace(1, 2, len(lambdas_list)))
            log(f"levels carried over by rank from the {meta['metric']} table")
        elif tuple(init_lambdas) != tuple(lambdas_list):
            # A new quality table: carry the transforms over, move the gain vectors (and the
            # steps of z, which are per level too).
            for key in ("log_gain", "log_z_step"):
                if key in weights:
                    weights[key] = retarget_log_gains(weights[key], init_lambdas, lambdas_list)
            log(f"quality table moved from {list(init_lambdas)} to {list(lambdas_list)}")
        own = model.state_dict()
        if latent_channels(weights) != cfg.M:
            # A wider latent (the M=320 candidate): the trained channels carry over, the new
            # ones start where they change nothing but the rate (train.widen).
            log(f"latent widened from M={latent_channels(weights)} to M={cfg.M}")
            weights = widen(weights, own)
        if cfg.slices and any(k.startswith("contexts.") and (k not in own or
                                                             own[k].shape != v.shape)
                              for k, v in weights.items()):
            # A channel-conditional checkpoint with another split of y: its transforms carry
            # over, and the slice networks start again at zero output, as from a plain one.
            weights = {k: v for k, v in weights.items() if not k.startswith("contexts.")}
            log("the slice networks of the initial model do not fit this split: they start "
                "fresh")
        missing, unexpected = model.load_state_dict(weights, strict=False)
        # A channel-conditional model starts from a plain hyperprior's transforms; its slice
        # networks start at zero output (see train.slices), and z steps at 1. Nothing else
        # may be missing.
        if unexpected or any(not k.startswith("contexts.") and k != "log_z_step"
                             for k in missing):
            raise ValueError(f"{cfg.init_from} does not fit this model: missing "
                             f"{sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}")
        log(f"initialised from {cfg.init_from}"
            + (f" ({len(missing)} slice-network tensors start fresh)" if missing else ""))
        if cfg.continue_run and meta.get("metric") == cfg.metric:
            # A committed fp16 checkpoint continues its run in a new session: the optimiser
            # moments restart, but the step count (and so the learning-rate schedule) and
            # the wall time carry on.
            state["step"] = int(meta.get("steps", 0))
            state["wall_seconds"] = float(meta.get("wall_seconds", 0.0))
            sampler.rng = np.random.default_rng([cfg.seed, state["step"]])
            log(f"continuing from step {state['step']}")

    if fresh_optimizer:
        state["warmup_from"] = state["step"]  # saved, so a run stopped in its warm-up resumes it
    use_bf16 = device == "cpu" and (
        cfg.bf16 == "on" or (cfg.bf16 == "auto" and native_bf16()))
    log(f"device={device} bf16={use_bf16} threads={torch.get_num_threads()}")
    if device == "cpu":
        model = model.to(memory_format=torch.channels_last)
    model.train()
    ema = None
    if cfg.ema_decay:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay),
                            use_buffers=True)
        if saved_ema is not None:
            ema.load_state_dict(saved_ema)
        else:
            log(f"weight average (decay {cfg.ema_decay}) starts from the weights at step "
                f"{state['step']}")

    loss_log = LossLog(run_dir / "losses.csv", len(lambdas_list))
    validation = {}
    if cfg.validate_minutes:
        validation = {name: load_folder(Path(cfg.data_root) / name)
                      for name in cfg.validation_sets}

    def validate_now() -> None:
        wall = wall_at_start + time.monotonic() - start
        loss_log.flush_train(state["step"], wall)
        for name, images in validation.items():
            rows = validate(model, images, device=device, lambdas=lambdas_list,
                            metric=cfg.metric)
            loss_log.add_validation(state["step"], wall, name, len(images), rows)
            log(f"validated {name} at step {state['step']}: " + " ".join(
                f"{r['level']}:{r['bpp']:.3f}/{r['psnr']:.2f}" for r in rows))
            if ema is not None and int(ema.n_averaged) > 0:  # else it is the weights
                rows = validate(ema.module, images, device=device, lambdas=lambdas_list,
                                metric=cfg.metric)
                loss_log.add_validation(state["step"], wall, f"{name}-ema", len(images), rows)
                log(f"validated {name} (weight average) at step {state['step']}: " + " ".join(
                    f"{r['level']}:{r['bpp']:.3f}/{r['psnr']:.2f}" for r in rows))
        state["validated_at"] = state["step"]

    def save() -> None:
        blob = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                "sampler_rng": sampler.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(), "state": state,
                "config": asdict(cfg), "model_config": model_config(model)}
        if ema is not None:
            blob["ema"] = ema.state_dict()
        save_atomic(blob, ckpt_path)

    # SIGTERM/SIGINT finish the current step, write a checkpoint and return.
    stop = {"requested": False}

    def request_stop(signum, frame):
        stop["requested"] = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    start = time.monotonic()
    wall_at_start = state["wall_seconds"]
    last_save = last_validation = start
    if validation and state.get("validated_at") != state["step"]:
        validate_now()
    window = []
    while state["step"] < cfg.steps and not stop["requested"]:
        if cfg.time_limit_minutes and time.monotonic() - start > cfg.time_limit_minutes * 60:
            break
        lr = cfg.lr * (0.1 if state["step"] >= cfg.lr_drop_at * cfg.steps else 1.0)
        if "warmup_from" in state:
            done = state["step"] - state["warmup_from"]
            if done < cfg.warmup_steps:
                lr *= (done + 1) / cfg.warmup_steps
            else:
                del state["warmup_from"]
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        x = sampler.batch(cfg.batch).to(device)
        if device == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        level = torch.randint(0, len(lambdas_list), (cfg.batch,), device=device).float()
        losses, bpps, means = optimiser_step(model, opt, x, level, lambdas, cfg.metric, use_bf16)
        loss_log.add_train(level.cpu(), losses.float().cpu(), bpps.float().cpu())
        if ema is not None:
            ema.update_parameters(model)
        state["step"] += 1
        window.append(means)
        if state["step"] % cfg.log_every == 0:
            mean = np.mean(window, axis=0)
            window.clear()
            state["wall_seconds"] = wall_at_start + time.monotonic() - start
            entry = {"step": state["step"], "loss": float(mean[0]), "bpp": float(mean[1]),
                     "distortion": float(mean[2]), "lr": lr,
                     "wall_seconds": round(state["wall_seconds"], 1)}
            state["history"].append(entry)
            log(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in entry.items()))
            if not math.isfinite(entry["loss"]):
                raise FloatingPointError(f"loss is {entry['loss']} at step {state['step']}")
        if validation and time.monotonic() - last_validation > cfg.validate_minutes * 60:
            validate_now()
            last_validation = time.monotonic()
        if time.monotonic() - last_save > cfg.checkpoint_minutes * 60:
            state["wall_seconds"] = wall_at_start + time.monotonic() - start
            save()
            last_save = time.monotonic()
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    if validation and state.get("validated_at") != state["step"] and not stop["requested"]:
        validate_now()
    state["wall_seconds"] = wall_at_start + time.monotonic() - start
    save()
    meta = {"metric": cfg.metric, "lambdas": list(lambdas_list), "steps": state["step"],
            "batch": cfg.batch, "crop": cfg.crop, "wall_seconds": round(state["wall_seconds"])}
    if cfg.wide_share is not None:
        meta["wide_share"] = cfg.wide_share
    save_float_model(model.to(memory_format=torch.contiguous_format), run_dir / "model_fp16.pt",
                     meta)
    if ema is not None:
        save_float_model(ema.module.to(memory_format=torch.contiguous_format),
                         run_dir / "model_ema_fp16.pt", {**meta, "ema_decay": cfg.ema_decay})
    return state
