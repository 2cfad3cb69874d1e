#!/usr/bin/env python3
"""GPU check: how fast serkd's teacher and students train on this GPU, and how long the paper grids take.

    python3 benchmarks/gpu_check.py [--out benchmarks/results/gpu_check.json] [--budget 450]
    python3 benchmarks/gpu_check.py --cpu-smoke --out /tmp/gpu_check.json      # the same code, tiny, on CPU

One command, at most ``--budget`` seconds (default 450: under 8 minutes on one GPU), from a bare checkout:
it puts ``src`` on the path itself and needs python3 with torch, transformers, timm, numpy and scikit-learn
(PyYAML if present). It never imports librosa, soundfile, soxr or opensmile (nothing here reads audio) and
downloads nothing: every model is built from a config in code with random weights, every input is random.
It measures serkd's own code, not a copy:

- teacher: the WavLM Base+ architecture (``serkd.models.wavlm_teacher.build``: transformers'
  ``WavLMForSequenceClassification`` with the SUPERB weighted layer sum) fine-tuned as the teacher driver
  (``serkd.train.teacher_wavlm.fine_tune``) steps it: batch 8, frozen CNN feature encoder, bf16 autocast,
  AdamW with a group for the new head, linear warm-up schedule, gradient clipping at 1 with a finiteness
  check per step, the feature extractor padding each batch on the host. Steps/s and peak memory at the
  grids' crop lengths (5 s Emo-DB, 12.5 s IEMOCAP); inference utterances/s (batch 16, every layer's mean).
- students: Light-SERNet+ and mobilenetv3_small_075 (and, for the grid estimate, efficientnet_b0 and
  resnet18), each trained by the real ``serkd.train.loop.fit`` (seed recipe, batch 16, CKD loss with
  teacher logits, validation every epoch) on random features of the real shapes (mel 128 x 313 and MFCC
  40 x 626 for a 5 s crop; 128 x 782 / 40 x 1563 for IEMOCAP's 12.5 s), 535 utterances split as a fold
  (IEMOCAP stand-ins keep its 3 / 1 / 1 session split and are scaled to its 5531 utterances). 1, 2, 4
  and 8 units share the GPU as separate processes started together, as the grid's local executor runs
  them (``--jobs N``); a barrier makes them time the same epochs at the same time.
- estimates: the wall-clock of ``examples/paper-emodb.yaml`` and ``examples/paper-iemocap.yaml`` (units,
  folds and epochs read from the files) on this GPU for each number of units at a time, in words.

Every section runs in its own process and may fail alone (a CUDA error, out of memory, a missing package):
the JSON is rewritten after each one, failures are listed (``failures``) and printed, and the rest goes on.
Timing is done right: ``torch.cuda.synchronize`` before every clock read around GPU work (``fit`` syncs
once per epoch itself), peak memory from ``torch.cuda.max_memory_allocated`` after a reset.

``--cpu-smoke`` runs every section at tiny sizes on the CPU (a 2-layer WavLM, 24 utterances of small
features, 1 and 2 units) in well under a minute and writes every field, so the tests cover this script;
its numbers and estimates mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("librosa", "soundfile", "soxr", "opensmile")  # absent on the GPU machine: never imported here
RESULT_VERSION = 1
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gpu_check.json"
GRIDS = {name: ROOT / "examples" / f"{name}.yaml" for name in ("paper-emodb", "paper-iemocap")}
# the corpora's facts (README, design notes): utterances, folds, and each fold's share of training and
# validation speakers' utterances (Emo-DB: 10 speakers, 8 train / 1 valid / 1 test; IEMOCAP: 5 sessions, 3 / 1 / 1)
CORPORA = {
    "emodb": {"utterances": 535, "folds": 10, "train": 0.8, "valid": 0.1, "classes": 7},
    "iemocap": {"utterances": 5531, "folds": 5, "train": 0.6, "valid": 0.2, "classes": 4},
}
# the feature presets' shapes (serkd.data.features; read from there when librosa is importable):
# (bands, hop) with centred frames, so frames = 1 + samples // hop
PRESETS = {"mel": (128, 256), "mfcc": (40, 128)}
SWEPT = ("lightsernet", "mobilenetv3_small_075")  # timed with every number of units
GRID_STUDENTS = ("lightsernet", "mobilenetv3_small_075", "efficientnet_b0", "resnet18")
# what the estimate falls back to when a YAML file or PyYAML is missing: the example files' values
FALLBACK_GRIDS = {
    "paper-emodb": {"corpus": {"kind": "emodb"}, "features": ["mel", "mfcc"], "students": list(GRID_STUDENTS),
                    "methods": {m: {} for m in ("ce", "kd", "rkd", "dkd", "ckd")}, "folds": "all", "seeds": [0],
                    "teacher": {"epochs": 20, "batch_size": 8, "length": 80000},
                    "train": {"epochs": 100, "batch_size": 16, "length": 80000}, "gpus_per_unit": 0.25},
    "paper-iemocap": {"corpus": {"kind": "iemocap"}, "features": ["mel", "mfcc"], "students": list(GRID_STUDENTS),
                      "methods": {m: {} for m in ("ce", "kd", "rkd", "dkd", "ckd")}, "folds": "all", "seeds": [0],
                      "teacher": {"epochs": 20, "batch_size": 8, "length": 200000},
                      "train": {"epochs": 100, "batch_size": 16, "length": 200000}, "gpus_per_unit": 0.25},
}


# ------------------------------------------------------------------------------------------------ sizes
def sizes(smoke: bool) -> dict:
    """Everything that differs between the real check and the CPU smoke run."""
    if smoke:
        return {"device": "cpu", "teacher_size": "tiny", "teacher_batch": 2, "teacher_lengths": [4000, 8000],
                "teacher_steps": 2, "teacher_infer_batches": 2, "utterances": 16, "units": [1, 2],
                "coverage_units": [1], "target_s": 0.0, "min_epochs": 1, "max_epochs": 1, "smoke_shapes": True,
                "budget": 170}
    return {"device": "cuda", "teacher_size": "base-plus", "teacher_batch": 8, "teacher_lengths": [80000, 200000],
            "teacher_steps": 12, "teacher_infer_batches": 6, "utterances": 535, "units": [1, 2, 4, 8],
            "coverage_units": [1, 4], "target_s": 2.0, "min_epochs": 3, "max_epochs": 30, "smoke_shapes": False,
            "budget": 450}


def feature_shape(kind: str, samples: int, smoke: bool) -> tuple[int, int]:
    if smoke:  # small, but still taller for mel and longer for IEMOCAP, as the real shapes are
        return (32 if kind == "mel" else 16, (40 if kind == "mel" else 64) * (2 if samples > 100000 else 1))
    bands, hop = PRESETS[kind]
    return bands, 1 + samples // hop


def student_jobs(grid_lengths: dict[str, int], smoke: bool, coverage: bool) -> list[dict]:
    """One job per (student, features, corpus): the swept ones first (mel, Emo-DB), then the grid's rest."""
    jobs = []
    for corpus, length in grid_lengths.items():
        for kind in ("mel", "mfcc"):
            for student in GRID_STUDENTS:
                jobs.append({"student": student, "features": kind, "corpus": corpus, "length": length,
                             "shape": list(feature_shape(kind, length, smoke))})
    swept = [j for j in jobs if j["student"] in SWEPT and j["features"] == "mel" and j["corpus"] == "emodb"]
    if not coverage:
        return swept
    return swept + [j for j in jobs if j not in swept]


def job_name(job: dict) -> str:
    return f"{job['student']}/{job['features']}/{job['corpus']}"


# ------------------------------------------------------------------------------------------------ sections
def _setup_path() -> None:
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)


def _forbidden_imported() -> list[str]:
    return sorted(name for name in FORBIDDEN if sys.modules.get(name) is not None)


def section_environment(params: dict) -> dict:
    import numpy
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    from importlib import metadata

    for name, distribution in (("transformers", "transformers"), ("timm", "timm"), ("sklearn", "scikit-learn"),
                               ("scipy", "scipy"), ("onnxruntime", "onnxruntime"), ("yaml", "PyYAML")):
        try:
            info[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            info[name] = "absent"
    if params["device"].startswith("cuda") and torch.cuda.is_available():
        device = torch.device(params["device"])
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gb=round(props.total_memory / 2**30, 1), device_count=torch.cuda.device_count(),
                    bf16_supported=torch.cuda.is_bf16_supported())
    else:
        info.update(device_name=f"CPU ({platform.processor() or platform.machine()})", capability=None,
                    memory_gb=None, device_count=0, bf16_supported=False)
    return info


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


def _autocast(device):
    """As the teacher driver: bf16 autocast on CUDA, nothing on the CPU."""
    import contextlib

    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def section_environment_and_teacher(params: dict) -> dict:
    """The environment, then the teacher (one process: one torch import); a teacher failure keeps the environment."""
    env = section_environment(params)
    if params["device"].startswith("cuda") and not env["cuda_available"]:
        return {"environment": env, "teacher": None, "teacher_error": "no CUDA device visible to torch"}
    try:
        return {"environment": env, "teacher": section_teacher(params)}
    except Exception as exc:  # reported by the parent; the environment still comes back
        return {"environment": env, "teacher": None, "teacher_error": _one_line(exc),
                "traceback": traceback.format_exc()[-3000:]}


def section_teacher(params: dict) -> dict:
    """WavLM (Base+ size, random init) fine-tuning steps and inference, per crop length."""
    import numpy as np
    import torch
    from transformers import get_linear_schedule_with_warmup

    _setup_path()
    from serkd.models import wavlm_teacher as wt

    device = torch.device(params["device"])
    torch.manual_seed(0)
    labels = [f"class{i}" for i in range(7)]
    teacher = wt.build(wt.wavlm_config(params["teacher_size"]), labels)
    teacher.freeze_feature_encoder()  # the driver's default (freeze_feature_encoder: true)
    teacher.to(device)
    parameters = sum(p.numel() for p in teacher.parameters())
    head = {id(p) for p in teacher.head_parameters()}
    trainable = [p for p in teacher.parameters() if p.requires_grad]
    # the driver's optimiser: the transformer at lr, the new head at head_lr, AdamW, linear warm-up then decay
    optimizer = torch.optim.AdamW([
        {"params": [p for p in trainable if id(p) not in head], "lr": 5e-5},
        {"params": [p for p in trainable if id(p) in head], "lr": 5e-4},
    ], weight_decay=1e-2)
    scheduler = get_linear_schedule_with_warmup(optimizer, 10, 1000)
    rng = np.random.default_rng(0)
    batch = params["teacher_batch"]
    out = {"model": "WavLM Base+ architecture, random init" if params["teacher_size"] == "base-plus"
           else "tiny random-init WavLM (smoke)", "parameters": parameters,
           "trainable_parameters": sum(p.numel() for p in trainable), "bf16": device.type == "cuda",
           "frozen_feature_encoder": True, "batch": batch, "train": {}, "inference": {}}
    for samples in params["teacher_lengths"]:
        key = f"{samples / 16000:g}s"
        waves = [rng.standard_normal(samples).astype(np.float32) * 0.1 for _ in range(batch)]
        targets = torch.as_tensor(rng.integers(0, len(labels), batch))

        def step(waves=waves, targets=targets) -> None:
            inputs = teacher.inputs(waves)  # on the host, per batch, as the driver does
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device):
                logits, _ = teacher(**{k: v.to(device) for k, v in inputs.items()})
            loss = torch.nn.functional.cross_entropy(logits.float(), targets.to(device))
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            if torch.isfinite(norm):  # the driver's one sync per step
                optimizer.step()
            scheduler.step()

        teacher.train()
        _reset_peak(device)
        warm = _timed(step, 2, device)
        seconds, steps = _timed_until(step, params["teacher_steps"], params["target_s"], device)
        out["train"][key] = {"samples": samples, "batch": batch, "warmup_s": round(warm, 3), "steps": steps,
                             "seconds": round(seconds, 3), "steps_per_s": steps / seconds,
                             "utterances_per_s": steps * batch / seconds, "peak_memory_gb": _peak_gb(device)}
        optimizer.zero_grad(set_to_none=True)
        infer_batch = 2 * batch  # the driver's predict: twice the training batch, every layer's mean kept

        def infer(waves=waves) -> None:
            with torch.no_grad(), _autocast(device):
                inputs = teacher.inputs(waves + waves)
                z, e, h = teacher.forward_layers(**{k: v.to(device) for k, v in inputs.items()})
            z.float().cpu(), e.float().cpu(), h.cpu()

        teacher.eval()
        _reset_peak(device)
        _timed(infer, 1, device)
        seconds, calls = _timed_until(infer, params["teacher_infer_batches"], params["target_s"] / 2, device)
        out["inference"][key] = {"samples": samples, "batch": infer_batch, "batches": calls,
                                 "seconds": round(seconds, 3), "utterances_per_s": calls * infer_batch / seconds,
                                 "peak_memory_gb": _peak_gb(device)}
    return out


def _timed(fn, calls: int, device) -> float:
    _sync(device)
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return time.perf_counter() - started


def _timed_until(fn, min_calls: int, min_seconds: float, device) -> tuple[float, int]:
    """(seconds, calls): at least ``min_calls`` calls and ``min_seconds``, synchronised at both ends."""
    _sync(device)
    started = time.perf_counter()
    calls = 0
    while calls < min_calls or (time.perf_counter() - started < min_seconds and calls < 50 * min_calls):
        fn()
        calls += 1
        if calls >= min_calls:
            _sync(device)
    _sync(device)
    return time.perf_counter() - started, calls


def section_student_worker(params: dict) -> dict:
    """One unit: for each job, a warm-up epoch, the barrier, then timed epochs of the real ``fit``."""
    import numpy as np
    import torch

    _setup_path()
    from serkd import distill, models
    from serkd.train import loop

    torch.set_num_threads(1)  # the grid's one thread per unit
    device = torch.device(params["device"])
    sync = Path(params["sync_dir"])
    me = params["worker"]
    n = params["utterances"]
    results = []
    for j, job in enumerate(params["jobs"]):
        record = {"job": job_name(job), "worker": me}
        early = _read_json(sync / f"go-{j}.json")
        if early and early.get("skip"):  # the parent gave up on this job already: do not even build it
            record["error"] = "skipped: " + early.get("why", "time budget")
            _write_json(sync / f"done-{j}-{me}.json", record)
            continue
        try:
            corpus = CORPORA[job["corpus"]]
            n_train, n_valid = round(corpus["train"] * n), max(1, round(corpus["valid"] * n))
            generator = torch.Generator().manual_seed(1000 + me)
            features = torch.randn((n, 1, *job["shape"]), generator=generator) * 10 - 40  # dB-like values
            classes = corpus["classes"]
            targets = torch.randint(0, classes, (n,), generator=generator)
            teacher_logits = torch.randn((n, classes), generator=generator)
            train_idx, valid_idx = np.arange(n_train), np.arange(n_train, n_train + n_valid)
            torch.manual_seed(me)
            model = models.create(job["student"], num_classes=classes)
            loss_fn = distill.create(params["method"])
            resident = device.type == "cuda" and 4 * features.numel() <= (
                loop.RESIDENT_FRACTION * torch.cuda.mem_get_info(device)[0])

            data = (model, loss_fn, features, targets, train_idx, valid_idx)

            def train(epochs: int, data=data, teacher_logits=teacher_logits):
                return loop.fit(*data, loop.FitConfig(epochs=epochs, batch_size=16, seed=me), teacher_logits, device)

            warm = _timed(lambda: train(1), 1, device)
            _write_json(sync / f"ready-{j}-{me}.json", {"warm_s": warm})
            go = _wait_json(sync / f"go-{j}.json", params["wait_s"])
            if go is None or go.get("skip"):
                record["error"] = "skipped: " + (go or {}).get("why", "no start signal (time budget)")
                _write_json(sync / f"done-{j}-{me}.json", record)
                continue
            _reset_peak(device)
            _sync(device)
            started = time.perf_counter()
            fitted = train(int(go["epochs"]))
            _sync(device)
            wall = time.perf_counter() - started
            epoch_s = [h["train_s"] + h["valid_s"] for h in fitted.history]
            record.update(epochs=len(epoch_s), wall_s=wall, warm_s=warm, epoch_s=epoch_s,
                          median_epoch_s=float(np.median(epoch_s)), n_train=n_train, n_valid=n_valid,
                          utterances=n, peak_memory_gb=_peak_gb(device), features_on_device=resident)
        except Exception as exc:  # one failed job is reported, the next one still runs
            record["error"] = _one_line(exc)
            if not (sync / f"ready-{j}-{me}.json").exists():
                _write_json(sync / f"ready-{j}-{me}.json", {"error": record["error"]})
        _write_json(sync / f"done-{j}-{me}.json", record)
        results.append(record)
    return {"jobs": results}


SECTIONS = {"environment+teacher": section_environment_and_teacher, "student-worker": section_student_worker}


def block_audio_packages() -> None:
    """Make the audio packages unimportable, as on the GPU machine: transformers then skips its optional audio
    imports there as here, and serkd code that needs one fails here, loudly, instead of there."""
    for name in FORBIDDEN:
        if sys.modules.get(name) is None:
            sys.modules[name] = None  # type: ignore[assignment]  # an import of it raises ImportError


def run_section_here(name: str, params: dict, result_file: Path) -> int:
    """The child side: run one section, write ``{"result"|"error", "forbidden_imported"}``."""
    block_audio_packages()
    try:
        payload = {"result": SECTIONS[name](params)}
    except BaseException as exc:  # the parent reports it and goes on
        payload = {"error": _one_line(exc), "traceback": traceback.format_exc()[-3000:]}
    payload["forbidden_imported"] = _forbidden_imported()
    _write_json(result_file, payload)
    return 0


# ------------------------------------------------------------------------------------------------ the parent
class Check:
    def __init__(self, args, config: dict):
        self.args, self.config = args, config
        self.started = time.perf_counter()
        self.budget = args.budget or config["budget"]
        self.work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.result = skeleton(config, args)
        self.forbidden: set[str] = set()

    def remaining(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def fail(self, section: str, error: str) -> None:
        self.result["failures"].append({"section": section, "error": error})
        print(f"FAILED {section}: {error}", flush=True)

    def save(self) -> None:
        self.result["seconds"] = round(time.perf_counter() - self.started, 1)
        self.result["forbidden_modules_imported"] = sorted(self.forbidden)
        _write_json(self.args.out, self.result)

    def spawn(self, name: str, params: dict, tag: str) -> tuple[subprocess.Popen, Path, Path]:
        result_file = self.work / f"{tag}.result.json"
        log = self.work / f"{tag}.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                         os.environ.get("PYTHONPATH")]))}
        env.setdefault("OMP_NUM_THREADS", "1")
        with open(log, "w") as handle:
            process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--section", name, "--params",
                                        json.dumps(params), "--result", str(result_file)],
                                       stdout=handle, stderr=subprocess.STDOUT, env=env)
        return process, result_file, log

    def collect(self, name: str, process: subprocess.Popen, result_file: Path, log: Path) -> dict | None:
        """The section's result, or None after recording why there is none."""
        if process.poll() is None:
            _stop(process)
            self.fail(name, f"did not finish within the time budget ({self.budget:g} s in all)")
            return None
        payload = _read_json(result_file)
        if payload is None:
            self.fail(name, f"process exited with status {process.returncode} and no result; last output: "
                            f"{_tail(log)}")
            return None
        self.forbidden.update(payload.get("forbidden_imported", []))
        if "error" in payload:
            self.fail(name, payload["error"])
            return None
        return payload["result"]

    def section(self, name: str, params: dict, limit: float) -> dict | None:
        limit = min(limit, self.remaining())
        if limit < 5:
            self.fail(name, "skipped: the time budget is spent")
            return None
        print(f"[{self.elapsed()}] {name}...", flush=True)
        process, result_file, log = self.spawn(name, params, name)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=limit)
        return self.collect(name, process, result_file, log)

    def elapsed(self) -> str:
        return f"{time.perf_counter() - self.started:5.0f} s"

    def student_phase(self, units: int, jobs: list[dict], limit: float) -> list[dict]:
        """``units`` worker processes started together, each running ``jobs`` in step (a barrier per job)."""
        limit = min(limit, self.remaining())
        name = f"students x{units}"
        if limit < 10:
            self.fail(name, "skipped: the time budget is spent")
            return []
        print(f"[{self.elapsed()}] {name}: {len(jobs)} job(s) ({', '.join(job_name(j) for j in jobs[:2])}"
              f"{', ...' if len(jobs) > 2 else ''})", flush=True)
        deadline = time.perf_counter() + limit
        sync = self.work / f"sync-{units}"
        sync.mkdir()
        workers = [self.spawn("student-worker", {
            "device": self.config["device"], "jobs": jobs, "sync_dir": str(sync), "worker": w,
            "utterances": self.config["utterances"], "method": self.args.method,
            "wait_s": max(limit, 30)}, f"students-{units}-{w}") for w in range(units)]
        runs = []
        for j, job in enumerate(jobs):
            ready = self._wait_all(sync, "ready", j, units, workers, deadline)
            warm = [r.get("warm_s") for r in ready if r and "warm_s" in r]
            errors = sorted({r.get("error") for r in ready if r and r.get("error")})
            gone = any(process.poll() is not None for process, _, _ in workers) or None in ready
            if gone or time.perf_counter() > deadline:  # a worker died or never answered: the phase ends here
                why = "time budget" if time.perf_counter() > deadline else "a worker stopped"
                for later in range(j, len(jobs)):
                    _write_json(sync / f"go-{later}.json", {"skip": True, "why": why})
                self.fail(f"{name} {job_name(job)}", why + (f": {'; '.join(errors)}" if errors else ""))
                break
            if len(warm) < units:  # this job failed in some worker (e.g. out of memory): the next one may not
                _write_json(sync / f"go-{j}.json", {"skip": True, "why": "failed in another unit"})
                self._wait_all(sync, "done", j, units, workers, deadline)
                self.fail(f"{name} {job_name(job)}", "; ".join(errors) or "failed before the start")
                runs.append(summarise_run(units, job, [], self, errors))
                continue
            epochs = _epochs_for(max(warm), self.config)
            if time.perf_counter() + 3 * epochs * max(warm) > deadline:  # would not finish: stop here
                for later in range(j, len(jobs)):
                    _write_json(sync / f"go-{later}.json", {"skip": True, "why": "time budget"})
                self.fail(f"{name} {job_name(job)}", "skipped: the time budget is spent")
                break
            _write_json(sync / f"go-{j}.json", {"epochs": epochs})
            done = self._wait_all(sync, "done", j, units, workers, deadline)
            runs.append(summarise_run(units, job, done, self))
            print(f"[{self.elapsed()}]   {job_name(job)} x{units}: {_run_line(runs[-1])}", flush=True)
        for w, (process, result_file, log) in enumerate(workers):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(5.0, deadline - time.perf_counter()))
            if process.poll() is None:
                _stop(process)
            payload = _read_json(result_file)
            if payload:
                self.forbidden.update(payload.get("forbidden_imported", []))
                if "error" in payload:
                    self.fail(f"{name} worker {w}", payload["error"])
            elif process.returncode not in (0, None) and process.returncode > 0:
                self.fail(f"{name} worker {w}", f"exited with status {process.returncode}: {_tail(log)}")
        return runs

    def _wait_all(self, sync: Path, kind: str, j: int, units: int, workers, deadline: float) -> list[dict | None]:
        found: dict[int, dict] = {}
        while len(found) < units and time.perf_counter() < deadline:
            for w in range(units):
                if w not in found:
                    payload = _read_json(sync / f"{kind}-{j}-{w}.json")
                    if payload is not None:
                        found[w] = payload
                    elif workers[w][0].poll() is not None:  # died: never coming
                        found[w] = {"error": f"worker exited with status {workers[w][0].returncode}: "
                                             f"{_tail(workers[w][2])}"}
            time.sleep(0.01)
        return [found.get(w) for w in range(units)]


def _epochs_for(warm_s: float, config: dict) -> int:
    """Timed epochs: about ``target_s`` seconds' worth, judged from the (slower) warm-up epoch."""
    if config["target_s"] <= 0:
        return config["min_epochs"]
    return int(min(config["max_epochs"], max(config["min_epochs"], math.ceil(config["target_s"] / max(warm_s, 1e-3)))))


def summarise_run(units: int, job: dict, done: list[dict | None], check: Check,
                  errors: list[str] | None = None) -> dict:
    ok = [d for d in done if d and "median_epoch_s" in d]
    if errors is None:
        errors = sorted({(d or {}).get("error", "no result") for d in done if not (d and "median_epoch_s" in d)})
        if errors:
            check.fail(f"students x{units} {job_name(job)}", "; ".join(errors))
    run = {"units": units, **{k: job[k] for k in ("student", "features", "corpus", "length", "shape")},
           "units_ok": len(ok), "errors": errors}
    if ok:
        per_unit = [1.0 / d["median_epoch_s"] for d in ok]
        memory = [d["peak_memory_gb"] for d in ok if d["peak_memory_gb"] is not None]
        run.update(epochs=max(d["epochs"] for d in ok), utterances=ok[0]["utterances"], n_train=ok[0]["n_train"],
                   n_valid=ok[0]["n_valid"], median_epoch_s=float(_median([d["median_epoch_s"] for d in ok])),
                   per_unit_epochs_per_s=per_unit, epochs_per_s_per_unit=float(_median(per_unit)),
                   aggregate_epochs_per_s=float(sum(per_unit)) * units / len(ok),
                   warmup_s=max(d["warm_s"] for d in ok),
                   peak_memory_gb_per_unit=max(memory) if memory else None,
                   features_on_device=all(d["features_on_device"] for d in ok))
    return run


def _run_line(run: dict) -> str:
    if "epochs_per_s_per_unit" not in run:
        return "failed: " + "; ".join(run["errors"])
    memory = f", peak {run['peak_memory_gb_per_unit']:.2f} GB/unit" if run.get("peak_memory_gb_per_unit") else ""
    return (f"{run['epochs_per_s_per_unit']:.2f} epochs/s per unit, {run['aggregate_epochs_per_s']:.2f} in all"
            f"{memory}")


# ------------------------------------------------------------------------------------------------ estimates
def read_grid(name: str) -> tuple[dict, str]:
    path = GRIDS[name]
    try:
        import yaml

        return yaml.safe_load(path.read_text()), str(path.relative_to(ROOT))
    except Exception as exc:  # no PyYAML or no file: the example's values, said so
        return FALLBACK_GRIDS[name], f"built-in copy of {path.name} ({type(exc).__name__}: {exc})"[:200]


def grid_facts(grid: dict) -> dict:
    corpus = CORPORA[grid["corpus"]["kind"]]
    folds = corpus["folds"] if grid.get("folds", "all") in (None, "all") else len(grid["folds"])
    students, features = list(grid["students"]), list(grid["features"])
    methods, seeds = len(grid["methods"]), len(grid.get("seeds") or [0])
    train, teacher = grid.get("train") or {}, grid.get("teacher") or {}
    gpus = grid.get("gpus_per_unit", (grid.get("ray") or {}).get("gpus_per_unit"))  # older grids: under ray:
    return {"corpus": grid["corpus"]["kind"], "utterances": corpus["utterances"], "folds": folds,
            "students": students, "features": features, "methods": methods, "seeds": seeds,
            "student_units": len(students) * len(features) * methods * folds * seeds,
            "epochs": int(train.get("epochs", 100)), "length": int(train.get("length", 80000)),
            "teacher_folds": folds, "teacher_epochs": int(teacher.get("epochs", 20)),
            "teacher_batch": int(teacher.get("batch_size", 8)), "teacher_length": int(teacher.get("length", 80000)),
            "units_per_gpu": round(1 / gpus) if gpus else None}


def estimate(name: str, facts: dict, runs: list[dict], teacher: dict | None, units_measured: list[int],
             teacher_key: str | None, smoke: bool, device: str = "GPU") -> dict:
    """Hours for the grid per number of units at a time: teacher folds, then student units."""
    corpus = CORPORA[facts["corpus"]]
    n_train = round(corpus["train"] * facts["utterances"])
    n_valid = round(corpus["valid"] * facts["utterances"])
    out = {**facts, "by_units": {}, "teacher_hours": None, "teacher_note": None}
    if teacher and teacher_key in teacher.get("train", {}) and teacher_key in teacher.get("inference", {}):
        train, infer = teacher["train"][teacher_key], teacher["inference"][teacher_key]
        per_fold = (facts["teacher_epochs"] * (math.ceil(n_train / facts["teacher_batch"]) / train["steps_per_s"]
                                               + n_valid / infer["utterances_per_s"])
                    + facts["utterances"] / infer["utterances_per_s"])
        out["teacher_hours"] = facts["teacher_folds"] * per_fold / 3600
        out["teacher_note"] = (f"{facts['teacher_folds']} folds x {facts['teacher_epochs']} epochs, one fold at a "
                               f"time, every batch padded to {facts['teacher_length'] / 16000:g} s (an upper bound: "
                               "batches are padded to their longest utterance)")
    speedups = _sweep_speedups(runs)
    for units in units_measured:
        seconds, derived, missing = 0.0, [], []
        for student in facts["students"]:
            for kind in facts["features"]:
                rate, how = _rate(runs, student, kind, facts["corpus"], units, speedups)
                if rate is None:
                    missing.append(f"{student}/{kind}")
                    continue
                if how != "measured":
                    derived.append(f"{student}/{kind} ({how})")
                stand_in = _stand_in(runs, student, kind, facts["corpus"])
                scale = n_train / stand_in if stand_in else 1.0  # epochs of the real corpus' size
                unit_count = facts["methods"] * facts["folds"] * facts["seeds"]
                seconds += unit_count * facts["epochs"] * scale / rate
        entry = {"student_hours": seconds / 3600 if not missing else None, "derived": derived, "missing": missing}
        entry["total_hours"] = (entry["student_hours"] + (out["teacher_hours"] or 0.0)
                                if entry["student_hours"] is not None else None)
        out["by_units"][str(units)] = entry
    done = {int(u): e["total_hours"] for u, e in out["by_units"].items() if e["total_hours"] is not None}
    out["best_units"] = min(done, key=done.get) if done else None
    out["sentence"] = _sentence(name, out, smoke, device)
    return out


def _sweep_speedups(runs: list[dict]) -> dict[int, float]:
    """Aggregate throughput at k units over 1 unit, the mean over the swept students (to derive missing jobs)."""
    ratios: dict[int, list[float]] = {}
    for run in runs:
        if "aggregate_epochs_per_s" not in run:
            continue
        single = next((r for r in runs if r["units"] == 1 and r.get("aggregate_epochs_per_s") and
                       (r["student"], r["features"], r["corpus"]) == (run["student"], run["features"], run["corpus"])),
                      None)
        if single:
            ratios.setdefault(run["units"], []).append(run["aggregate_epochs_per_s"] / single["aggregate_epochs_per_s"])
    return {k: sum(v) / len(v) for k, v in ratios.items()}


def _rate(runs, student, kind, corpus, units, speedups) -> tuple[float | None, str]:
    """Aggregate epochs/s of ``units`` units of this job: measured, or derived from 1 unit and the sweep."""
    def find(k):
        return next((r for r in runs if (r["student"], r["features"], r["corpus"], r["units"]) ==
                     (student, kind, corpus, k) and r.get("aggregate_epochs_per_s")), None)

    run = find(units)
    if run:
        return run["aggregate_epochs_per_s"], "measured"
    single = find(1)
    if single and units in speedups:
        return single["aggregate_epochs_per_s"] * speedups[units], f"1 unit x the swept students' {units}-unit speed-up"
    return None, "missing"


def _stand_in(runs, student, kind, corpus) -> int | None:
    return next((r["n_train"] for r in runs if (r["student"], r["features"], r["corpus"]) == (student, kind, corpus)
                 and r.get("n_train")), None)


def _sentence(name: str, estimate_: dict, smoke: bool, device: str = "GPU") -> str:
    corpus = {"emodb": "Emo-DB", "iemocap": "IEMOCAP"}.get(estimate_["corpus"], estimate_["corpus"])
    best = estimate_["best_units"]
    if best is None:
        return f"the {corpus} paper grid: no estimate (the measurements it needs failed)"
    by = estimate_["by_units"]
    chosen = estimate_["units_per_gpu"] if str(estimate_["units_per_gpu"]) in by and \
        by[str(estimate_["units_per_gpu"])]["total_hours"] is not None else best
    teacher = (f"teacher {_hours(estimate_['teacher_hours'])}, " if estimate_["teacher_hours"] is not None
               else "teacher not measured, ")
    line = (f"the {corpus} paper grid ({name}: {estimate_['teacher_folds']} teacher folds x "
            f"{estimate_['teacher_epochs']} epochs, then {estimate_['student_units']} student units x "
            f"{estimate_['epochs']} epochs) takes about {_hours(by[str(chosen)]['total_hours'])} on this "
            f"{'CPU (smoke sizes: not an estimate)' if smoke else device} with {chosen} "
            f"unit{'s' if chosen > 1 else ''} at a time ({teacher}students {_hours(by[str(chosen)]['student_hours'])})")
    others = [f"{u} at a time {_hours(e['total_hours'])}" for u, e in by.items()
              if int(u) != chosen and e["total_hours"] is not None]
    if others:
        line += "; " + ", ".join(others)
    if best != chosen:
        line += f"; fastest with {best} at a time"
    return line


def _hours(hours: float | None) -> str:
    if hours is None:
        return "?"
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"


# ------------------------------------------------------------------------------------------------ output
def skeleton(config: dict, args) -> dict:
    """Every field, present from the start (None until measured), so a partial JSON has the full shape."""
    return {"version": RESULT_VERSION, "mode": "cpu-smoke" if args.cpu_smoke else "gpu",
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "seconds": None, "budget_s": args.budget or config["budget"], "method": args.method, "sizes": config,
            "environment": None, "grids": {}, "teacher": None, "students": {"units": config["units"], "runs": []},
            "estimates": {}, "summary": [], "failures": [], "audio_packages_blocked": list(FORBIDDEN),
            "forbidden_modules_imported": []}


def student_table(runs: list[dict]) -> list[str]:
    lines = [f"{'student':24} {'features':8} {'corpus':8} {'shape':>10} {'units':>5} {'epochs/s/unit':>13} "
             f"{'all units':>9} {'epoch s':>8} {'GB/unit':>8}"]
    for r in runs:
        if "epochs_per_s_per_unit" not in r:
            lines.append(f"{r['student']:24} {r['features']:8} {r['corpus']:8} {'x'.join(map(str, r['shape'])):>10} "
                         f"{r['units']:>5} failed: {'; '.join(r['errors'])[:60]}")
            continue
        memory = f"{r['peak_memory_gb_per_unit']:.2f}" if r.get("peak_memory_gb_per_unit") is not None else "-"
        lines.append(f"{r['student']:24} {r['features']:8} {r['corpus']:8} {'x'.join(map(str, r['shape'])):>10} "
                     f"{r['units']:>5} {r['epochs_per_s_per_unit']:>13.2f} {r['aggregate_epochs_per_s']:>9.2f} "
                     f"{r['median_epoch_s']:>8.3f} {memory:>8}")
    return lines


def teacher_lines(teacher: dict) -> list[str]:
    lines = [f"teacher: {teacher['model']} ({teacher['parameters'] / 1e6:.1f} M parameters), batch {teacher['batch']}, "
             f"{'bf16 autocast' if teacher['bf16'] else 'float32 (CPU)'}, frozen feature encoder"]
    for key, t in teacher["train"].items():
        memory = f", peak {t['peak_memory_gb']:.1f} GB" if t["peak_memory_gb"] is not None else ""
        lines.append(f"  fine-tune {key}: {t['steps_per_s']:.2f} steps/s ({t['utterances_per_s']:.1f} utterances/s)"
                     f"{memory}")
    for key, t in teacher["inference"].items():
        memory = f", peak {t['peak_memory_gb']:.1f} GB" if t["peak_memory_gb"] is not None else ""
        lines.append(f"  inference {key}: {t['utterances_per_s']:.1f} utterances/s (batch {t['batch']}){memory}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help=f"the JSON result (default: {DEFAULT_OUT})")
    parser.add_argument("--cpu-smoke", action="store_true", help="every section at tiny sizes on the CPU (tests)")
    parser.add_argument("--budget", type=float, help="seconds for everything (default: 450; smoke: 170)")
    parser.add_argument("--method", default="ckd", help="the students' KD loss (default: ckd, the costliest)")
    parser.add_argument("--device", help="torch device of the real check (default: cuda)")
    parser.add_argument("--section", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.section:
        code = run_section_here(args.section, json.loads(args.params), args.result)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # the result is written: skip tearing down torch and CUDA (seconds, per process)
    args.out = args.out or DEFAULT_OUT
    config = sizes(args.cpu_smoke)
    if args.device:
        config["device"] = args.device
    check = Check(args, config)
    try:
        return run_check(check)
    finally:
        shutil.rmtree(check.work, ignore_errors=True)


def run_check(check: Check) -> int:
    config, result, smoke = check.config, check.result, check.args.cpu_smoke
    check.save()
    grids = {name: grid_facts(read_grid(name)[0]) for name in GRIDS}
    result["grids"] = {name: {"source": read_grid(name)[1], **facts} for name, facts in grids.items()}
    # the teacher is timed at the grids' crop lengths (smoke: tiny stand-ins, matched in the same order)
    grid_teacher_lengths = sorted({facts["teacher_length"] for facts in grids.values()})
    if not smoke:
        config["teacher_lengths"] = grid_teacher_lengths
    teacher_lengths = config["teacher_lengths"]
    both = check.section("environment+teacher", {key: config[key] for key in (
        "device", "teacher_size", "teacher_batch", "teacher_lengths", "teacher_steps", "teacher_infer_batches",
        "target_s")}, 180 if not smoke else 120) or {}
    env = result["environment"] = both.get("environment")
    result["teacher"] = both.get("teacher")
    if env:
        print(f"device: {env['device_name']} ({env.get('memory_gb') or '-'} GB), torch {env['torch']}, "
              f"transformers {env['transformers']}, timm {env['timm']}", flush=True)
    if both.get("teacher_error"):
        check.fail("teacher", both["teacher_error"])
    check.save()
    if env and config["device"].startswith("cuda") and not env.get("cuda_available"):
        check.fail("environment", "no CUDA device visible to torch: nothing to measure (use --cpu-smoke on a CPU)")
        check.save()
        return 1
    if result["teacher"]:
        print("\n".join(teacher_lines(result["teacher"])), flush=True)
    lengths = {facts["corpus"]: facts["length"] for facts in grids.values()}
    runs = result["students"]["runs"]
    phases = [(units, units in config["coverage_units"]) for units in config["units"]]
    phases.sort(key=lambda p: (p[0] != 1, p[1] and p[0] != 1, p[0]))  # 1 unit first; the big coverage phase last
    for i, (units, coverage) in enumerate(phases):
        later = len(phases) - i - 1
        limit = check.remaining() - 10 - 45 * later * (0 if smoke else 1)
        runs.extend(check.student_phase(units, student_jobs(lengths, smoke, coverage), limit))
        check.save()
    for name, facts in grids.items():
        index = grid_teacher_lengths.index(facts["teacher_length"])
        key = f"{teacher_lengths[min(index, len(teacher_lengths) - 1)] / 16000:g}s"
        device = f"GPU ({env['device_name']})" if env and env.get("device_name") else "GPU"
        result["estimates"][name] = estimate(name, facts, runs, result["teacher"], config["units"], key, smoke, device)
    result["summary"] = [e["sentence"] for e in result["estimates"].values()]
    check.save()
    print()
    print("\n".join(student_table(runs)))
    print()
    for line in result["summary"]:
        print(line)
    if check.forbidden:
        print(f"WARNING: imported {', '.join(sorted(check.forbidden))}, which the GPU machine does not have")
    print(f"{len(result['failures'])} failure(s); {result['seconds']:.0f} s; JSON: {check.args.out}")
    for failure in result["failures"]:
        print(f"  {failure['section']}: {failure['error']}")
    return 0 if not result["failures"] else 1


# ------------------------------------------------------------------------------------------------ helpers
def _write_json(path: Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)  # readers never see half a file


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _wait_json(path: Path, timeout: float) -> dict | None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        payload = _read_json(path)
        if payload is not None:
            return payload
        time.sleep(0.005)
    return None


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(log: Path, chars: int = 400) -> str:
    try:
        text = Path(log).read_text(errors="replace").strip()
    except OSError:
        return "(no output)"
    return " | ".join(text[-chars:].splitlines()[-4:]) or "(no output)"


def _one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}"[:400]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


if __name__ == "__main__":
    sys.exit(main())
