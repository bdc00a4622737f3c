"""timm backbones on one-channel spectrograms (``pip install 'chirpkit[timm]'``).

Registered names map to timm models; any other timm model is reachable as ``timm/<name>``.
``pretrained=True`` loads ImageNet weights (timm sums the first convolution's RGB filters into one
channel): from the Hugging Face hub when it can be reached, or from a local file given as
``pretrained_file`` (``model.pretrained_file`` in the config), e.g. a ``model.safetensors``
downloaded on another machine. Offline without a file, creation fails with a message saying so.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from torch import nn

from chirpkit.errors import ConfigError, RunError
from chirpkit.models._registry import ModelEntry, register_model, register_prefix

__all__ = ["TIMM_MODELS", "create_timm", "timm_available"]

#: chirpkit name → timm name
TIMM_MODELS = {
    "efficientnetv2_s": "tf_efficientnetv2_s",
    "efficientnetv2_b0": "tf_efficientnetv2_b0",
    "efficientnet_b0": "efficientnet_b0",
    "convnext_tiny": "convnext_tiny",
    "convnext_atto": "convnext_atto",
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "mobilenetv3_large": "mobilenetv3_large_100",
    "mobilenetv3_small": "mobilenetv3_small_100",
}


def timm_available() -> bool:
    """Whether timm can be imported (after chirpkit's torchvision compatibility step)."""
    import importlib.util

    from chirpkit.utils.compat import ensure_torchvision_importable

    if importlib.util.find_spec("timm") is None:
        return False
    ensure_torchvision_importable()
    return True


def _import_timm() -> Any:
    from chirpkit.utils.compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    try:
        import timm
    except ImportError as exc:
        raise ConfigError(
            "timm backbones need timm: pip install 'chirpkit[timm]' (on a CPU-only torch, pin the "
            "torchvision that matches your torch, e.g. pip install 'torchvision==0.28.0' 'chirpkit[timm]' "
            "for torch 2.13; see docs/verbs/models.md, timm backbones)"
        ) from exc
    return timm


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers (honours HF_HUB_OFFLINE); avoids minutes of retries offline."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def create_timm(
    timm_name: str,
    *,
    num_classes: int,
    in_chans: int = 1,
    dropout: float = 0.3,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    timm = _import_timm()
    overlay = {"file": pretrained_file} if pretrained_file else None
    if pretrained and not pretrained_file and not _hub_reachable():
        raise RunError(
            f"pretrained weights for {timm_name!r} need the Hugging Face hub, which cannot be reached "
            "(offline?). "
            f"Download the weights elsewhere (the model.safetensors of timm/{timm_name}) and set "
            "model.pretrained_file=PATH, or train from scratch with model.pretrained=false"
        )
    try:
        return timm.create_model(
            timm_name,
            pretrained=pretrained,
            in_chans=in_chans,
            num_classes=num_classes,
            drop_rate=dropout,
            pretrained_cfg_overlay=overlay,
            **kwargs,
        )
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ConfigError(f"timm has no model {timm_name!r} (timm.list_models() lists them)") from exc
        if pretrained:
            raise RunError(
                f"pretrained weights for {timm_name!r} could not be loaded "
                f"({str(exc).splitlines()[0][:160]}). "
                "Offline? Download the weights elsewhere (e.g. the model.safetensors of timm/"
                f"{timm_name} on the Hugging Face hub) and set model.pretrained_file=PATH, or train from "
                "scratch with model.pretrained=false"
            ) from exc
        raise
    except (OSError, ValueError) as exc:
        if pretrained:
            raise RunError(
                f"pretrained weights for {timm_name!r} could not be loaded ({exc}); set "
                "model.pretrained_file=PATH to a local weights file, or model.pretrained=false"
            ) from exc
        raise


def _factory(timm_name: str) -> Any:
    def make(num_classes: int, in_chans: int = 1, **kwargs: Any) -> nn.Module:
        return create_timm(timm_name, num_classes=num_classes, in_chans=in_chans, **kwargs)

    make.__doc__ = f"timm {timm_name} (in_chans=1)"
    return make


for _name, _timm_name in TIMM_MODELS.items():
    register_model(
        _name,
        description=f"timm {_timm_name}, one input channel; pretrained weights optional",
        pretrained=True,
    )(_factory(_timm_name))


def _any_timm(name: str) -> ModelEntry:
    timm_name = name[len("timm/") :]
    return ModelEntry(name, _factory(timm_name), f"timm {timm_name}", pretrained=True)


register_prefix("timm/", _any_timm)
