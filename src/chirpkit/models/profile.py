"""``chirpkit profile``: what a model costs — parameters, FLOPs, memory, throughput — measured,
next to the back-of-the-envelope estimate of the practitioners' notes.

* FLOPs per window from ``torch.utils.flop_counter`` (front-end and backbone; a training step
  counts forward and backward).
* Peak memory of a training step (AdamW) and of inference at ``batch_size``: on CUDA the
  allocator's peak (``max_memory_allocated``); on CPU, which has no allocator statistics, the
  growth of a fresh process's resident set from just before the first step to its high-water
  mark after it (so it includes the allocator's own overhead).
* Throughput: windows per second for inference and for training steps, after a warm-up.
* The notes' estimate: weights + gradients + optimizer states (2 per weight for AdamW) +
  activations (4 bytes × the outputs of every layer), all in float32.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import torch

from chirpkit.config import Config
from chirpkit.models import ClassifierNet, ModelSpec

__all__ = ["profile"]

_CHILD = r"""
import json, sys, torch
from chirpkit.models import ClassifierNet, ModelSpec
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
def status(key):
    return int([ln for ln in open("/proc/self/status") if ln.startswith(key)][0].split()[1]) * 1024
net = ClassifierNet(ModelSpec.from_dict(args["spec"]))
x = torch.randn(args["batch"], net.spec.window_samples) * 0.1
y = torch.randint(0, net.spec.num_classes, (args["batch"],))
if args["mode"] == "train":
    net.train()
    opt = torch.optim.AdamW(net.parameters())
    before = status("VmRSS")
    opt.zero_grad(); torch.nn.functional.cross_entropy(net(x), y).backward(); opt.step()
else:
    net.eval()
    before = status("VmRSS")
    with torch.inference_mode():
        net(x)
print(json.dumps({"peak_bytes": status("VmHWM") - before}))
"""


def _build(model: str | os.PathLike[str], config: Config, num_classes: int) -> ClassifierNet:
    from pathlib import Path

    from chirpkit.models import list_models, load_network, read_model_file
    from chirpkit.models.classifier import waveform_network

    if Path(model).exists():
        return waveform_network(*load_network(read_model_file(model)))
    name = str(model)
    from chirpkit.errors import ConfigError

    if name not in list_models() and not name.startswith("timm/"):
        raise ConfigError(
            f"{name!r} is neither a run folder, a model file nor a registered model ({list_models()})"
        )
    spec = ModelSpec(
        name,
        [f"class_{i}" for i in range(num_classes)],
        config.audio.sample_rate,
        config.audio.window_s,
        config.features.model_dump(),
        {"dropout": config.model.dropout, **config.model.params},
    )
    return ClassifierNet(spec)


def _conv_backward_flop(
    grad_out_shape: Any,
    x_shape: Any,
    w_shape: Any,
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    _output_padding: Any,
    _groups: Any,
    output_mask: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """FLOPs of ``aten.convolution_backward``: each multiply of the forward pass has one partner in
    the input gradient and one in the weight gradient. torch's own formula ignores ``groups`` for
    the weight gradient (up to 2.13 at least; pytorch/pytorch#183405) and so counts a depthwise
    convolution's channels times too many (15x the forward FLOPs for an EfficientNetV2 training step
    instead of about 3x)."""
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _flops(net: ClassifierNet, x: torch.Tensor, *, train: bool) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    net.train(train)
    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flop}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        out = net(x)
        if train:
            out.sum().backward()
    net.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def _activation_bytes(net: ClassifierNet, x: torch.Tensor) -> int:
    total = 0

    def hook(_m: torch.nn.Module, _i: Any, out: Any) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * 4

    hooks = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    with torch.no_grad():
        net.eval()(x)
    for h in hooks:
        h.remove()
    return total


def _measured_peak(spec: dict[str, Any], batch: int, mode: str, device: torch.device) -> int:
    if device.type == "cuda":
        net = ClassifierNet(ModelSpec.from_dict(spec)).to(device)
        x = torch.randn(batch, net.spec.window_samples, device=device) * 0.1
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        if mode == "train":
            opt = torch.optim.AdamW(net.parameters())
            y = torch.randint(0, net.spec.num_classes, (batch,), device=device)
            torch.nn.functional.cross_entropy(net.train()(x), y).backward()
            opt.step()
        else:
            with torch.inference_mode():
                net.eval()(x)
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated(device) - base)
    args = json.dumps({"spec": spec, "batch": batch, "mode": mode, "threads": torch.get_num_threads()})
    res = subprocess.run([sys.executable, "-c", _CHILD, args], capture_output=True, text=True, check=True)
    return int(json.loads(res.stdout.strip().splitlines()[-1])["peak_bytes"])


def _throughput(net: ClassifierNet, x: torch.Tensor, *, train: bool, steps: int) -> float:
    opt = torch.optim.AdamW(net.parameters()) if train else None
    y = torch.randint(0, net.spec.num_classes, (len(x),), device=x.device)

    def once() -> None:
        if opt is not None:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net.train()(x), y).backward()
            opt.step()
        else:
            with torch.inference_mode():
                net.eval()(x)

    once()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        once()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * len(x) / (time.perf_counter() - t)


def profile(
    model: str | os.PathLike[str] = "small_cnn",
    *,
    config: Config | None = None,
    batch_size: int = 32,
    num_classes: int = 10,
    steps: int = 3,
    device: str = "auto",
) -> dict[str, Any]:
    """Profile a registered model (built with ``config``'s audio and features) or a trained run.

    Returns:
        ``{"model", "params", "gflops_per_window", "training_step_gflops_per_window", "measured":
        {...}, "estimate": {...}}`` (bytes and windows per second).
    """
    from chirpkit.models.predict import pick_device

    cfg = config or Config()
    net = _build(model, cfg, num_classes)
    dev = pick_device(device)
    params = sum(p.numel() for p in net.parameters())
    one = torch.randn(1, net.spec.window_samples) * 0.1
    flops_inf = _flops(net, one, train=False)
    flops_train = _flops(net, one.repeat(2, 1), train=True) / 2  # batch of 2: batch norm needs > 1
    acts = _activation_bytes(net, one) * batch_size
    weights = params * 4
    spec = net.spec.to_dict()
    net = net.to(dev)
    x = torch.randn(batch_size, net.spec.window_samples, device=dev) * 0.1
    return {
        "model": net.spec.architecture,
        "device": str(dev),
        "batch_size": batch_size,
        "input": f"{net.spec.window_s} s at {net.spec.sample_rate} Hz → {cfg.features.kind}",
        "params": params,
        "gflops_per_window": flops_inf / 1e9,
        "training_step_gflops_per_window": flops_train / 1e9,
        "measured": {
            "train_step_peak_bytes": _measured_peak(spec, batch_size, "train", dev),
            "inference_peak_bytes": _measured_peak(spec, batch_size, "infer", dev),
            "inference_windows_per_s": _throughput(net, x, train=False, steps=steps),
            "train_windows_per_s": _throughput(net, x, train=True, steps=steps),
        },
        "estimate": {
            "weights_bytes": weights,
            "gradients_bytes": weights,
            "optimizer_bytes": 2 * weights,
            "activations_bytes": acts,
            "train_total_bytes": 4 * weights + acts,
            "inference_total_bytes": weights + acts,
        },
    }
