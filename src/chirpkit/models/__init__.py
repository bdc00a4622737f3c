"""Models: the registry (:func:`create_model`, :func:`list_models`), the spec and the network."""

from chirpkit.models import cnn as _cnn  # noqa: F401  (registers the CNNs)
from chirpkit.models import heads as _heads  # noqa: F401  (registers the BirdNET embedding heads)
from chirpkit.models import timm_models as _timm  # noqa: F401  (registers timm names; timm loads on use)
from chirpkit.models._registry import create_model, list_models, model_info, register_model
from chirpkit.models.spec import ClassifierNet, ModelSpec, load_model, save_model

__all__ = [
    "ClassifierNet",
    "ModelSpec",
    "create_model",
    "list_models",
    "load_model",
    "model_info",
    "register_model",
    "save_model",
]
