"""The WavLM teacher: a transformers checkpoint (hub id or local folder) with a SUPERB-style head.

Head choice: ``AutoModelForAudioClassification`` (for WavLM: ``WavLMForSequenceClassification``) with
``use_weighted_layer_sum=True``: a learned softmax-weighted sum of the CNN output and every transformer
layer, a linear projector, a masked mean over frames and a linear classifier. That is the SUPERB
emotion-recognition head; emotion cues sit in the middle layers more than in the last one. Using the
library's own class, not a hand-written copy of it, keeps padding masks and SpecAugment as transformers
implements and tests them, and other encoders with the same head (wav2vec 2.0, HuBERT) load the same way.
Layer drop is turned off: transformers' encoder then leaves dropped layers out of ``hidden_states``,
which breaks the weighted sum. ``forward_layers`` also returns, for feature-based KD, the masked mean
over frames of every hidden state (CNN output + each transformer layer, [B, L, D]); the pooled vector
(the classifier's input: projected, mean-pooled frames, so ``logits = W @ pooled + b`` holds exactly)
is ``projector(sum_l softmax(layer_weights)_l mean_l)``, the projector being linear.

Weights are resolved once per command: a hub id gives its snapshot's commit hash as the revision, a
local folder ``local-<sha1 of config and weight files>``; without weights on disk and no hub access the
error is one line. A fine-tuned teacher is saved with its head (:func:`save_finetuned`: transformers'
``save_pretrained``, safetensors + JSON) and loaded back as it was (:func:`load_finetuned`).
``write_tiny`` saves a tiny random-init WavLM (2 layers, hidden 32) for tests and
the demo: it exercises the real code path but is *not* WavLM Base+, and says so in its config.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from serkd.data.audio import SAMPLE_RATE, file_hash
from serkd.errors import SerkdError

TINY_NOTE = "tiny random-init WavLM, not WavLM Base+"
HUB_BASE_PLUS = "microsoft/wavlm-base-plus"
# WavLM Base+ architecture (microsoft/wavlm-base-plus config.json): for timing without a download
BASE_PLUS: dict = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "conv_dim": (512,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "num_buckets": 320,
    "max_bucket_distance": 800, "feat_extract_norm": "group", "classifier_proj_size": 256,
}
# Same layout, minimal sizes; the conv strides still multiply to 320 (a frame every 20 ms, as Base+), and
# the first one is 10, not 5: its output is most of a small encoder's cost
TINY: dict = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
    "conv_dim": (32, 32, 32, 32), "conv_kernel": (20, 8, 4, 4), "conv_stride": (10, 4, 4, 2),
    "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4, "num_buckets": 32,
    "max_bucket_distance": 100, "feat_extract_norm": "group", "classifier_proj_size": 32,
}
_TRUE = ("1", "on", "yes", "true")


@dataclass(frozen=True)
class ResolvedModel:
    """Where the weights are and which version they are."""

    name: str  # as the user gave it
    source: str  # a local folder or a hub id
    revision: str  # commit hash, or local-<hash> for a folder
    note: str | None = None  # e.g. TINY_NOTE, from the config
    pin: str | None = None  # the hub revision to load, so config and weights come from one commit

    @property
    def display(self) -> str:
        return self.note or self.name


def looks_like_hf_model(name: str) -> bool:
    """A hub id (``org/name``), a folder, or anything naming WavLM: the teacher path, not a CNN."""
    return "wavlm" in name.lower() or "/" in name or Path(name).is_dir()


def hub_offline() -> bool:
    """Read at call time: huggingface_hub reads HF_HUB_OFFLINE once, at import."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve(name: str, revision: str | None = None) -> ResolvedModel:
    """Find the checkpoint and pin its version; never downloads weights (only ``config.json``)."""
    folder = Path(name)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise SerkdError(f"{folder}: not a transformers model folder (no config.json)")
        weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
        if not weights:
            raise SerkdError(f"{folder}: no weights (*.safetensors) beside config.json")
        digest = hashlib.sha1()
        for path in [folder / "config.json", *weights]:
            digest.update(f"{path.name}:{file_hash(path)}\n".encode())
        return ResolvedModel(name, str(folder), f"local-{digest.hexdigest()[:12]}", _note(folder / "config.json"))
    config_path = _hub_file(name, "config.json", revision)
    from transformers.utils.hub import extract_commit_hash

    commit = extract_commit_hash(config_path, None)
    return ResolvedModel(name, name, commit or revision or "unknown", _note(Path(config_path)), commit or revision)


def _note(config_path: Path) -> str | None:
    import json

    try:
        return json.loads(config_path.read_text(encoding="utf-8")).get("serkd_note")
    except (OSError, ValueError) as exc:
        raise SerkdError(f"{config_path}: unreadable model config ({exc})") from None


def _hub_file(repo: str, filename: str, revision: str | None) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import logging as hub_logging

    offline = hub_offline()
    level = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()  # no line per retry: the outcome is reported once, below
    try:
        return hf_hub_download(repo, filename, revision=revision, local_files_only=offline)
    except LocalEntryNotFoundError:
        if offline:
            raise SerkdError(f"{repo}: weights not found locally and the hub is offline (HF_HUB_OFFLINE is set; "
                             "download them once with hub access, or pass a local folder)") from None
        raise SerkdError(f"{repo}: weights not found locally and the hub is unreachable (no network? "
                         "pass a local folder; HF_HUB_OFFLINE=1 fails without retrying)") from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise SerkdError(f"{repo}: no such model or revision on the hub ({_first_line(exc)})") from None
    except (OSError, ValueError) as exc:
        raise SerkdError(f"{repo}: cannot fetch {filename} ({_first_line(exc)})") from None
    finally:
        hub_logging.set_verbosity(level)


@contextmanager
def _quiet_transformers():
    """transformers prints progress bars and a load report per call; serkd reports what matters itself."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


class WavLMTeacher(nn.Module):
    """Waveforms -> (logits [B, C], pooled embedding [B, D]); ``inputs`` pads a batch as the extractor says."""

    def __init__(self, model: nn.Module, extractor):
        super().__init__()
        self.model = model
        self.extractor = extractor
        self._pooled: torch.Tensor | None = None
        # the pooled vector is the classifier's input: catch it there instead of re-implementing the head
        model.classifier.register_forward_pre_hook(self._keep_pooled)

    def _keep_pooled(self, _module, args) -> None:
        self._pooled = args[0]

    def inputs(self, waves: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        batch = self.extractor(list(waves), sampling_rate=SAMPLE_RATE, padding=True, return_tensors="pt")
        out = {"input_values": batch["input_values"]}
        if "attention_mask" in batch:
            out["attention_mask"] = batch["attention_mask"].long()
        return out

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """(logits [B, C], pooled [B, P])."""
        logits, pooled, _ = self._run(input_values, attention_mask, layers=False)
        return logits, pooled

    def forward_layers(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """(logits [B, C], pooled [B, P], layer means [B, L, D] float32): L = num_hidden_layers + 1."""
        return self._run(input_values, attention_mask, layers=True)

    def _run(self, input_values, attention_mask, layers: bool):
        with warnings.catch_warnings():
            # WavLM's attention mixes a boolean padding mask with its float position bias: torch warns every call
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask", category=UserWarning)
            out = self.model(input_values, attention_mask=attention_mask, output_hidden_states=layers)
        pooled, self._pooled = self._pooled, None
        means = self.layer_means(out.hidden_states, attention_mask) if layers else None
        return out.logits, pooled, means

    def layer_means(self, hidden_states: Sequence[torch.Tensor], attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Masked mean over frames of each [B, T, D] hidden state -> [B, L, D] float32; the sample mask is
        downsampled to frames as the classification head does it."""
        stacked = torch.stack(hidden_states, dim=1).float()  # [B, L, T, D]
        if attention_mask is None:
            return stacked.mean(dim=2)
        frames = self.model._get_feature_vector_attention_mask(stacked.shape[2], attention_mask)  # [B, T] bool
        weights = frames.to(stacked.dtype)
        return torch.einsum("bltd,bt->bld", stacked, weights) / weights.sum(dim=1).view(-1, 1, 1)

    def layer_weights(self) -> list[float]:
        """The learned SUPERB layer weights, before their softmax (one per hidden state)."""
        return self.model.layer_weights.detach().float().cpu().tolist()

    def freeze_feature_encoder(self) -> None:
        self.model.freeze_feature_encoder()

    def head_parameters(self) -> list[nn.Parameter]:
        """The parameters the checkpoint does not provide (layer weights, projector, classifier)."""
        base = getattr(self.model, self.model.base_model_prefix)
        backbone = {id(p) for p in base.parameters()}
        return [p for p in self.model.parameters() if id(p) not in backbone]


def load(resolved: ResolvedModel, labels: Sequence[str]) -> WavLMTeacher:
    """The checkpoint with a fresh SUPERB-style head for ``labels`` (a head of another size is replaced)."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, Wav2Vec2FeatureExtractor

    offline = hub_offline()
    options = {"local_files_only": offline, **({"revision": resolved.pin} if resolved.pin else {})}
    try:
        with _quiet_transformers():
            model, info = AutoModelForAudioClassification.from_pretrained(
                resolved.source, num_labels=len(labels), id2label=dict(enumerate(labels)),
                label2id={name: i for i, name in enumerate(labels)}, use_weighted_layer_sum=True, layerdrop=0.0,
                ignore_mismatched_sizes=True, dtype=torch.float32, output_loading_info=True, **options,
            )
            try:
                extractor = AutoFeatureExtractor.from_pretrained(resolved.source, **options)
            except OSError:  # checkpoints saved without preprocessor_config.json: the wav2vec 2.0 default
                extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    except OSError as exc:
        if offline or "connect" in str(exc).lower():
            raise SerkdError(f"{resolved.name}: weights not found locally and the hub is offline "
                             f"({_first_line(exc)})") from None
        raise SerkdError(f"{resolved.name}: cannot load model ({_first_line(exc)})") from None
    except ValueError as exc:  # e.g. a config whose model type has no audio-classification head
        raise SerkdError(f"{resolved.name}: cannot build a classifier from it ({_first_line(exc)})") from None
    if "layer_weights" in info["missing_keys"]:
        _uniform_layer_weights(model)
    return WavLMTeacher(model, extractor)


def save_finetuned(teacher: WavLMTeacher, folder: str | Path) -> None:
    """The fine-tuned model (encoder, layer weights, head) and its feature extractor: safetensors + JSON."""
    folder = Path(folder)
    with _quiet_transformers():
        teacher.model.save_pretrained(folder, safe_serialization=True)
        teacher.extractor.save_pretrained(folder)


def load_finetuned(folder: str | Path) -> WavLMTeacher:
    """A teacher saved by :func:`save_finetuned`, exactly as it was (eval mode, on the CPU)."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise SerkdError(f"{folder}: no saved WavLM teacher (config.json missing)")
    with _quiet_transformers():
        model = AutoModelForAudioClassification.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
        extractor = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
    return WavLMTeacher(model, extractor).eval()


def _uniform_layer_weights(model: nn.Module) -> None:
    """transformers 5 leaves a new ``layer_weights`` uninitialised (its ``_init_weights`` skips it), so it
    holds whatever was in memory (seen: 2e17): start from the equal weights its constructor intends."""
    with torch.no_grad():
        model.layer_weights.fill_(1.0 / model.layer_weights.numel())


def wavlm_config(size: str = "tiny", **overrides):
    """A ``WavLMConfig`` of the tiny test size or the Base+ size (random init, nothing downloaded)."""
    from transformers import WavLMConfig

    sizes = {"tiny": TINY, "base-plus": BASE_PLUS}
    if size not in sizes:
        raise SerkdError(f"unknown WavLM size {size!r} (available: {', '.join(sizes)})")
    return WavLMConfig(**{**sizes[size], **overrides})


def build(config, labels: Sequence[str], extractor=None) -> WavLMTeacher:
    """A randomly initialised teacher from a config (benchmarks: no checkpoint needed for timing)."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMForSequenceClassification

    config.num_labels = len(labels)
    config.use_weighted_layer_sum = True
    config.layerdrop = 0.0
    return WavLMTeacher(WavLMForSequenceClassification(config),
                        extractor or Wav2Vec2FeatureExtractor(return_attention_mask=True))


def write_tiny(out: str | Path, seed: int = 0) -> Path:
    """Save a tiny random-init WavLM backbone + feature extractor, loadable offline by ``from_pretrained``.

    Like the hub's ``microsoft/wavlm-base-plus`` it is a bare ``WavLMModel`` (no head): loading it goes
    through exactly the path Base+ does. Its config carries ``serkd_note`` so results say what it is.
    """
    from transformers import Wav2Vec2FeatureExtractor, WavLMModel

    out = Path(out)
    torch.manual_seed(seed)
    with _quiet_transformers():
        WavLMModel(wavlm_config("tiny", serkd_note=TINY_NOTE)).save_pretrained(out)
        # normalised input: a random-init encoder learns from scratch much faster on unit-variance audio
        Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(out)
    return out


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
