"""Models: the registry (:func:`create_model`, :func:`list_models`), the spec and the networks."""

from chirpkit.models import cnn as _cnn  # noqa: F401  (registers the CNNs)
from chirpkit.models import heads as _heads  # noqa: F401  (registers the BirdNET embedding heads)
from chirpkit.models import timm_models as _timm  # noqa: F401  (registers timm names; timm loads on use)
from chirpkit.models._registry import ModelEntry, create_model, list_models, model_info, register_model
from chirpkit.models.classifier import ClassifierNet
from chirpkit.models.network import build_network, load_model, load_network, warm_start
from chirpkit.models.spec import ModelSpec, read_model_file, save_model

__all__ = [
    "ClassifierNet",
    "ModelEntry",
    "ModelSpec",
    "build_network",
    "create_model",
    "list_models",
    "load_model",
    "load_network",
    "model_info",
    "read_model_file",
    "register_model",
    "save_model",
    "warm_start",
]
