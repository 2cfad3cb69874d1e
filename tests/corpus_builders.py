"""Build Emo-DB, IEMOCAP, RAVDESS, CREMA-D and MSP-Podcast release layouts with real file names and tiny
audio, for the corpus tests.

Audio is a few clips of 0.05 s noise encoded once by soundfile and copied as bytes: writing each of
IEMOCAP's 5531 files through soundfile would cost ~3 ms a file, the bytes ~0.2 ms.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import soundfile as sf

IEMOCAP_CSV = "reference/seed_artifacts/iemocap_4class_utterances.csv"
EMODB_PTH = "reference/seed_artifacts/emodb_tea_preds_by_path.pth"
IEMOCAP_PTH = "reference/seed_artifacts/iemocap_tea_preds_by_path.pth"
EMODB_SPEAKERS = ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")


def wav_bytes(seconds: float = 0.05, rate: int = 16000, seed: int = 0, channels: int = 1, subtype="PCM_16") -> bytes:
    rng = np.random.default_rng(seed)
    samples = (0.1 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


CLIPS = [wav_bytes(0.05 + 0.01 * i, seed=i) for i in range(4)]


def write_clip(path: Path, index: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(CLIPS[index % len(CLIPS)])


def emodb_names(texts=("a01", "a02"), letters="WLEAFTN", speakers=EMODB_SPEAKERS) -> list[str]:
    return [f"{s}{t}{e}a.wav" for s in speakers for t in texts for e in letters]


def build_emodb(root: Path, names: list[str], subfolder: bool = True) -> Path:
    folder = root / "wav" if subfolder else root
    for i, name in enumerate(names):
        write_clip(folder / name, i)
    return root


def iemocap_rows(shared: Path) -> list[dict[str, str]]:
    with open(shared / IEMOCAP_CSV, newline="") as handle:
        return list(csv.DictReader(handle))


def build_iemocap(root: Path, rows: list[dict[str, str]]) -> Path:
    """The release layout for ``rows`` (columns of the seed's utterance CSV), with the traps of the real one.

    Every other hap line is written as exc (merged into happiness); each dialog also labels a
    non-4-class utterance (fru, sur, xxx ...) whose wav exists, carries annotator lines that mention
    emotions, and the EmoEvaluation/Categorical subfolder holds a per-annotator file to ignore.
    """
    distractors = ["fru", "xxx", "sur", "fea", "dis", "oth"]
    by_dialog: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        by_dialog.setdefault((row["session"], row["file"].rsplit("_", 1)[0]), []).append(row)
    for d, ((session, dialog), members) in enumerate(sorted(by_dialog.items())):
        base = root / f"Session{session}"
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        start = 1.0
        for i, row in enumerate(members):
            emotion = "exc" if row["emotion"] == "hap" and i % 2 else row["emotion"]
            end = start + float(row["duration"])
            vad = f"[{float(row['valence']):.4f}, {float(row['activation']):.4f}, {float(row['dominance']):.4f}]"
            lines += [f"[{start:.4f} - {end:.4f}]\t{row['file']}\t{emotion}\t{vad}",
                      "C-E1:\tAnger; Frustration;\t()", "A-E1:\tval 3; act 2; dom  2;\t()", ""]
            write_clip(base / "sentences" / "wav" / dialog / f"{row['file']}.wav", i)
            start = end + 0.5
        extra = f"{dialog}_{'F' if d % 2 else 'M'}9{d % 100:02d}"
        lines += [f"[{start:.4f} - {start + 1:.4f}]\t{extra}\t{distractors[d % len(distractors)]}\t[2.5, 2.5, 2.5]",
                  ""]
        write_clip(base / "sentences" / "wav" / dialog / f"{extra}.wav")
        label_dir = base / "dialog" / "EmoEvaluation"
        label_dir.mkdir(parents=True, exist_ok=True)
        (label_dir / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
        (label_dir / "Categorical").mkdir(exist_ok=True)
        (label_dir / "Categorical" / f"{dialog}_e1_cat.txt").write_text(
            f"[0.0 - 1.0]\t{extra}\tang\t[1, 1, 1]\n")
    return root


def ravdess_names(actors=range(1, 25), channel: str = "01", modality: str = "03") -> list[str]:
    """The real speech set: 60 per actor (neutral at normal intensity only; 2 statements x 2 repetitions)."""
    names = []
    for actor in actors:
        for emotion in range(1, 9):
            for intensity in (1,) if emotion == 1 else (1, 2):
                for statement in (1, 2):
                    for repetition in (1, 2):
                        names.append(f"{modality}-{channel}-{emotion:02d}-{intensity:02d}-{statement:02d}-"
                                     f"{repetition:02d}-{actor:02d}.wav")
    return names


def build_ravdess(root: Path, names: list[str]) -> Path:
    """``ROOT/Actor_XX/<name>``, the actor folder taken from the name's last field."""
    for i, name in enumerate(names):
        write_clip(root / f"Actor_{name[-6:-4]}" / name, i)
    return root


CREMAD_SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")


def cremad_names(actors=range(1001, 1092), sentences=CREMAD_SENTENCES, emotions=("ANG", "DIS", "FEA", "HAP", "NEU",
                                                                                   "SAD")) -> list[str]:
    """The real naming: IEO is spoken at levels LO MD HI (neutral XX), the other sentences at XX."""
    names = []
    for actor in actors:
        for sentence in sentences:
            for emotion in emotions:
                levels = ("LO", "MD", "HI") if sentence == "IEO" and emotion != "NEU" else ("XX",)
                names += [f"{actor}_{sentence}_{emotion}_{level}.wav" for level in levels]
    return names


def build_cremad(root: Path, names: list[str], subfolder: bool = True) -> Path:
    folder = root / "AudioWAV" if subfolder else root
    for i, name in enumerate(names):
        write_clip(folder / name, i)
    return root


MSP_COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")


def msp_rows(plan: dict[str, list[str]], classes: str = "AHSNCUFDOX", per: int = 1) -> list[dict[str, str]]:
    """Rows of ``labels_consensus.csv``: for each split, each speaker id in ``plan[split]`` gets ``per``
    utterances of every class letter in ``classes`` (file names as the release's, MSP-PODCAST_0001_0001.wav)."""
    rows, n = [], 0
    for split, speakers in plan.items():
        for speaker in speakers:
            for letter in classes:
                for _ in range(per):
                    n += 1
                    rows.append({"FileName": f"MSP-PODCAST_{1 + n // 50:04d}_{n % 50 + 1:04d}.wav", "EmoClass": letter,
                                 "EmoAct": "4.2", "EmoVal": "3.8", "EmoDom": "4.0", "SpkrID": speaker,
                                 "Gender": "Female" if n % 2 else "Male", "Split_Set": split})
    return rows


def build_msp_podcast(root: Path, rows: list[dict[str, str]]) -> Path:
    """``ROOT/Labels/labels_consensus.csv`` and ``ROOT/Audios/<FileName>`` for every row."""
    write_csv(root / "Labels" / "labels_consensus.csv", rows, MSP_COLUMNS)
    for i, row in enumerate(rows):
        if row["FileName"]:
            write_clip(root / "Audios" / row["FileName"], i)
    return root


def error_lines(err: str) -> list[str]:
    """The ``serkd: error:`` lines of a command's stderr; a traceback fails the calling test."""
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("serkd: error:")]


def write_csv(path: Path, rows: list[dict[str, str]], columns=("path", "label", "speaker")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
