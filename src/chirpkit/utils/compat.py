"""A narrowly scoped compatibility step for torchvision wheels built for another torch.

timm imports torchvision, and so do Lightning and torchmetrics as soon as torchvision is
installed. When the installed torchvision's compiled operators cannot load against the installed
torch (for example the only torchvision 0.28 wheel on PyPI is a CUDA build, and torch is the CPU
build: its ``_C.so`` needs ``libtorch_cuda.so``), ``import torchvision`` fails with
``operator torchvision::nms does not exist``, because its Python side registers fake kernels for
operators the missing library would have defined.

:func:`ensure_torchvision_importable` runs before chirpkit imports Lightning or timm. It does
nothing when torchvision is absent, already imported, or its operators load; otherwise it defines
the schemas of those 13 operators (from torchvision's ``csrc/ops/*.cpp``), without kernels, so the
import succeeds. Classification backbones never call them; torchvision's detection operators
(``nms``, ``roi_align``, ...) stay unusable in that process, and a warning says so.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["ensure_torchvision_importable"]

log = logging.getLogger("chirpkit")

_SCHEMAS = (
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, int pooled_height, int pooled_width, "
    "int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, int pooled_height, "
    "int pooled_width, int sampling_ratio, int batch_size, int channels, int height, int width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, int pooled_height, int pooled_width) -> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, int pooled_height, "
    "int pooled_width, int batch_size, int channels, int height, int width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, int pooled_height, int pooled_width) "
    "-> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, int pooled_height, "
    "int pooled_width, int batch_size, int channels, int height, int width) -> Tensor",
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qroi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, int stride_h, int stride_w, "
    "int pad_h, int pad_w, int dilation_h, int dilation_w, int groups, int offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
    "int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w, int groups, "
    "int offset_groups, bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)
_library: Any = None  # kept alive: the definitions vanish with the Library object


def ensure_torchvision_importable() -> bool:
    """Make ``import torchvision`` work when its compiled operators cannot load; ``True`` if the
    compatibility schemas were defined."""
    global _library
    if _library is not None or "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    import torch

    if hasattr(torch.ops.torchvision, "nms"):  # its library is loaded already
        return False
    lib_path = next(Path(spec.origin).parent.glob("_C*.so"), None)
    if lib_path is not None:
        try:
            torch.ops.load_library(str(lib_path))
            return False  # the operators load: nothing to do
        except (OSError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0][:160]
    else:
        reason = "no compiled library"
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _library.define(schema)
    log.warning(
        "torchvision's compiled operators do not load with this torch build (%s); chirpkit defined their "
        "schemas so that timm, Lightning and torchmetrics can import torchvision. Its detection operators "
        "(nms, roi_align, ...) are unavailable in this process. Install the torchvision build that matches "
        "torch to remove this notice.",
        reason,
    )
    return True
