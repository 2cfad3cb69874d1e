"""Importing the seed's shipped teacher logits (``*_tea_preds_by_path.pth``) as what they are.

The file is a ``{key: logits}`` dict: the key is an Emo-DB file name (``03a01Fa.wav``) or an IEMOCAP
path relative to the release root (``Session1/sentences/wav/<dialog>/<utterance>.wav``), the value a
float tensor with one logit per class in the seed's class order (the order of the corpus' labels in
serkd). It is read with ``torch.load(weights_only=True)`` only: no pickled code runs.

The seed computed them with *one* fine-tuned WavLM Base+ per corpus, and it saw the test speakers of
every fold: on held-out IEMOCAP sessions they score WA 0.83-0.89, far above published WavLM Base+
results. So the same logits are written to every fold of the store with provenance ``seed-shipped``
and ``fold_clean: False``; ``serkd train --teacher`` then refuses them unless ``--allow-leaky-teacher``,
which marks the results ``leaky-teacher``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from serkd.data.audio import file_hash
from serkd.data.manifest import Manifest
from serkd.data.teacher_outputs import folds_in, utterance_hashes, write_fold
from serkd.errors import BadInputError, SerkdError

PROVENANCE = "seed-shipped"
TEACHER = "seed WavLM Base+ (shipped logits)"
WHY_LEAKY = ("the seed's one teacher per corpus saw every fold's test speakers "
             "(WA 0.83-0.89 on held-out IEMOCAP sessions)")


@dataclass
class ImportSummary:
    store: Path
    source: Path
    keys: int  # entries in the file
    matched: int  # entries that name an utterance of the corpus
    unmatched_keys: list[str]  # entries that name none
    uncovered: list[str]  # corpus utterance ids without logits
    folds: list[str]

    def to_json(self) -> dict:
        return {"store": str(self.store), "source": str(self.source), "keys": self.keys, "matched": self.matched,
                "unmatched_keys": len(self.unmatched_keys), "uncovered_utterances": len(self.uncovered),
                "unmatched_examples": self.unmatched_keys[:5], "uncovered_examples": self.uncovered[:5],
                "folds": self.folds, "provenance": PROVENANCE, "fold_clean": False}


def read_seed_logits(path: Path) -> dict[str, np.ndarray]:
    """The file's ``{key: logits}``, every value a finite 1-D float32 vector of one common length."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; weights_only refusals among them
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInputError(path, f"cannot read as a weights-only torch file ({first[:200]})") from None
    if not isinstance(obj, dict) or not obj:
        raise BadInputError(path, "expected a non-empty {file name or relative path: logits} dict")
    logits = {}
    for key, value in obj.items():
        vector = np.asarray(value.detach().cpu().float() if torch.is_tensor(value) else value, dtype=np.float32)
        if not isinstance(key, str) or vector.squeeze().ndim != 1 or not np.all(np.isfinite(vector)):
            raise BadInputError(path, f"entry {key!r}: expected a path key and a finite vector of logits")
        logits[key] = vector.reshape(-1)
    sizes = {len(v) for v in logits.values()}
    if len(sizes) != 1:
        raise BadInputError(path, f"logit vectors of different lengths {sorted(sizes)}")
    return logits


def match_keys(keys: list[str], manifest: Manifest) -> tuple[dict[str, int], list[str]]:
    """Key -> utterance index: by path relative to the corpus root, else by file name when that is unique."""
    by_path, by_name, names_seen = {}, {}, set()
    for i, utt in enumerate(manifest.utterances):
        by_path[utt.path.relative_to(manifest.root).as_posix() if utt.path.is_relative_to(manifest.root)
                else utt.path.as_posix()] = i
        name = utt.path.name
        if name in names_seen:
            by_name.pop(name, None)  # two files of that name: only a full path can tell them apart
        else:
            by_name[name] = i
            names_seen.add(name)
    matched, unmatched, owner = {}, [], {}
    for key in keys:
        posix = PurePosixPath(key.replace("\\", "/"))
        index = by_path.get(posix.as_posix(), by_name.get(posix.name))
        if index is None:
            unmatched.append(key)
            continue
        if index in owner:
            raise BadInputError(manifest.utterances[index].path, f"two seed keys name it: {owner[index]!r}, {key!r}")
        owner[index] = key
        matched[key] = index
    return matched, unmatched


def import_seed(source: Path, manifest: Manifest, store: Path, root: str | Path | None = None,
                corpus_options: dict | None = None) -> ImportSummary:
    """Write the seed's logits for the corpus' utterances to every fold of ``store`` (not fold-clean)."""
    source, store = Path(source), Path(store)
    logits = read_seed_logits(source)
    width = len(next(iter(logits.values())))
    if width != len(manifest.labels):
        raise BadInputError(source, f"{width} logits per utterance, but the {manifest.corpus} corpus has "
                                    f"{len(manifest.labels)} classes ({', '.join(manifest.labels)})")
    matched, unmatched = match_keys(list(logits), manifest)
    if not matched:
        example = manifest.utterances[0].path.relative_to(manifest.root) if manifest.utterances else "-"
        raise BadInputError(source, f"no key names an utterance of {manifest.root} (keys look like "
                                    f"{next(iter(logits))!r}, the corpus' paths like '{example}')")
    fold_names = [f.name for f in manifest.folds]
    foreign = sorted(set(folds_in(store)) - set(fold_names)) if store.is_dir() else []
    if foreign:
        raise SerkdError(f"{store}: already holds teacher outputs of other folds ({', '.join(foreign)}); "
                         "import into an empty folder")
    rows = sorted(matched.values())
    key_of = {i: k for k, i in matched.items()}
    utt_ids = [manifest.utterances[i].utt_id for i in rows]
    matrix = np.stack([logits[key_of[i]] for i in rows])
    covered = set(rows)
    uncovered = [u.utt_id for i, u in enumerate(manifest.utterances) if i not in covered]
    meta = {"teacher": TEACHER, "provenance": PROVENANCE, "fold_clean": False, "leak": WHY_LEAKY,
            "corpus": manifest.corpus, "root": str(root or manifest.root), "corpus_options": corpus_options or {},
            "labels": list(manifest.labels), "data_hash": manifest.data_hash(),
            "source": str(source), "source_sha1": file_hash(source)}
    hashes = utterance_hashes(manifest)
    meta["audio_sha1"] = [hashes[u] for u in utt_ids]
    for fold in manifest.folds:
        write_fold(store, fold.name, utt_ids, matrix, {**meta, "valid_speakers": list(fold.valid),
                                                       "test_speakers": list(fold.test), "selection": None})
    return ImportSummary(store, source, len(logits), len(matched), unmatched, uncovered, fold_names)
