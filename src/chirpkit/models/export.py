"""``chirpkit export``: the whole waveform → logits network (front-end included) as ONNX or
TorchScript, with the model spec inside, checked against PyTorch on random input.

* ONNX (``model.onnx``): exported with PyTorch's dynamo exporter (opset 18; the STFT is an ONNX
  ``STFT`` op), dynamic batch size; the spec is the ``chirpkit_spec`` metadata entry (JSON).
  Run it with onnxruntime, or give it to ``chirpkit detect`` (``pip install 'chirpkit[export]'``).
* TorchScript (``model.ts``): a trace; the spec is the ``spec.json`` extra file
  (``torch.jit.load(path, _extra_files={"spec.json": ""})``). PyTorch 2.13 deprecates
  TorchScript; prefer ONNX for new deployments.

Input: ``waveform`` float32 ``(batch, window_samples)`` at the spec's sample rate, already
conditioned as the spec's ``conditioning`` says (chirpkit's detect does this). Output: ``logits``
``(batch, classes)`` in the order of ``class_names`` (softmax for probabilities).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chirpkit.errors import ConfigError, RunError
from chirpkit.models import load_network, read_model_file
from chirpkit.models.classifier import waveform_network
from chirpkit.utils.io import atomic_path, write_json

__all__ = ["export"]

log = logging.getLogger("chirpkit")


def _onnx(net: torch.nn.Module, example: torch.Tensor, path: Path, spec: dict[str, Any]) -> None:
    try:
        import onnx
    except ImportError as exc:
        raise RunError("ONNX export needs onnx and onnxscript: pip install 'chirpkit[export]'") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            net,
            (example,),
            input_names=["waveform"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=18,
            dynamo=True,
            verbose=False,
        )
    assert program is not None
    model = program.model_proto
    entry = model.metadata_props.add()
    entry.key, entry.value = "chirpkit_spec", json.dumps(spec)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def _torchscript(net: torch.nn.Module, example: torch.Tensor, path: Path, spec: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, example)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in torch 2.13
        torch.jit.save(traced, str(tmp), _extra_files={"spec.json": json.dumps(spec)})


def export(
    run: str | os.PathLike[str],
    *,
    format: str = "onnx",
    out: str | os.PathLike[str] | None = None,
    tolerance: float = 1e-4,
) -> dict[str, Any]:
    """Export a run's model and check it: the largest logit difference from PyTorch on a fresh
    random batch must stay below ``tolerance``.

    Returns:
        ``{"path", "format", "max_abs_diff", "spec"}`` (also written to ``<path>.json``).

    Raises:
        ConfigError: unknown format. RunError: missing export libraries, or the check failed.
    """
    if format not in ("onnx", "torchscript"):
        raise ConfigError(f"unknown export format {format!r}; use onnx or torchscript")
    run_dir = Path(run)
    loaded, model_spec = load_network(read_model_file(run_dir))
    net = waveform_network(loaded, model_spec).optimize_for_inference()
    spec = net.spec.to_dict()
    path = (
        Path(out)
        if out is not None
        else (run_dir if run_dir.is_dir() else run_dir.parent)
        / ("model.onnx" if format == "onnx" else "model.ts")
    )
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, net.spec.window_samples, generator=gen) * 0.1
    if format == "onnx":
        _onnx(net, example, path, spec)
    else:
        _torchscript(net, example, path, spec)

    from chirpkit.models.predict import load_predictor

    check = (torch.randn(3, net.spec.window_samples, generator=gen) * 0.1).numpy()
    with torch.inference_mode():
        logits = net(torch.from_numpy(check))
        ref = (
            torch.sigmoid(logits) if net.spec.task == "multilabel" else torch.softmax(logits, dim=1)
        ).numpy()
    got = load_predictor(path, device="cpu")(check)
    diff = float(np.abs(got - ref).max())
    if not diff <= tolerance:
        raise RunError(
            f"exported {format} model differs from PyTorch by {diff:.3g} (> {tolerance}); not trusted"
        )
    info = {"path": str(path), "format": format, "max_abs_diff": diff, "checked_batch": 3, "spec": spec}
    write_json(f"{path}.json", info)
    log.info("exported %s → %s (max |Δ probability| vs PyTorch %.2g)", format, path, diff)
    return info
