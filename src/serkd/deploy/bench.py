"""Latency, real-time factor, size and FLOPs of an exported student beside a WavLM teacher, on one clip.

Everything is measured in one process on the same clip (``CLIP_SECONDS`` of a tone-and-noise
waveform at 16 kHz; the graph's cost does not depend on the content): the student's ONNX graph in
onnxruntime (end to end: crop, front-end, network, softmax), the same student in torch eager, and
the teacher in torch eager (its feature extractor's normalisation included), each on one thread and
on all of them. Latency is the p50 / p95 of ``repeats`` timed runs after warm-up runs; beside each wall time
the process' CPU time per run is recorded (``cpu_p50_ms``): on a machine shared with other work the wall
time also counts the waits for a CPU, the CPU time does not, so the speed targets are judged on it
(with one thread and a free core the two agree). The environment records the load average and the CPU's
int8 dot-product instructions (``cpu_flags``: AVX512-VNNI, AVX-VNNI, ARM dot product), which decide
whether int8 compute pays.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on the torch modules (a
multiply-add is 2 FLOPs): the student is rebuilt from the graph's metadata (model name, classes,
feature preset; random weights, which do not change the count), so a bare ``.onnx`` file suffices.

Teachers (``--teacher``): ``auto`` (the default) uses WavLM Base+ weights if they are on disk (hub cache,
never downloaded) and otherwise the Base+ architecture with random weights: the same size and cost, so the
comparison is against the real teacher's size either way; ``base-plus-config`` (always random init);
``tiny``, a 2-layer random WavLM (tests only: not a meaningful comparison); ``none``; or a local model
folder / hub id. :func:`headline` says the result in a user's words ("runs 900x faster than real time:
5 s of audio in 5.4 ms").

The teacher runs in torch only: exporting WavLM Base+ to ONNX is a separate project. The speed-up
target is judged twice: in one runtime (student and teacher both in torch eager, one thread: does
the FLOP saving show?) and as deployed (the student's graph in onnxruntime against the teacher in
torch). A quantized graph has no torch twin, so only the second applies to it.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from serkd.errors import SerkdError

CLIP_SECONDS = 5.0
# end-to-end x real time on one thread (CPU time), per student (issues 7 and 20)
REALTIME_TARGETS = {"lightsernet": 100.0, "mobilenetv3_small_075": 2000.0, "tiny": 10000.0}
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")  # x86 flags; ARM: asimddp
SPEEDUP_FRACTION = 0.7  # measured speed-up >= this fraction of the FLOP ratio
WAITED = 1.25  # wall time above this multiple of the CPU time: the run waited for a CPU (the headline says so)
TEACHERS = ("auto", "tiny", "base-plus-config", "none")


@dataclass
class Latency:
    threads: int
    p50_ms: float
    p95_ms: float
    min_ms: float  # beside p50: on shared CPUs the gap between them is the contention
    runs: int
    cpu_p50_ms: float = 0.0  # the process' CPU time per run (all its threads): what the run costs, waits excluded

    def x_realtime(self, seconds: float) -> float:
        return seconds / (self.p50_ms / 1000.0)

    def summary(self, seconds: float) -> dict:
        return {**asdict(self), "rtf": self.p50_ms / 1000.0 / seconds, "x_realtime": self.x_realtime(seconds),
                "x_realtime_cpu": seconds / (self.cpu_p50_ms / 1000.0) if self.cpu_p50_ms > 0 else None}


def all_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def clip(seconds: float = CLIP_SECONDS, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.1 * t)) + 0.05 * noise).astype(np.float32)


def time_calls(run: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` calls after ``warmup`` untimed ones (shared by the benchmarks)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def measure(run: Callable[[], object], threads: int, repeats: int, warmup: int) -> Latency:
    """Wall and CPU time of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    wall, cpu = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    ms, cpu_ms = 1000.0 * np.array(wall), 1000.0 * np.array(cpu)
    return Latency(threads, float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(ms.min()), repeats,
                   float(np.percentile(cpu_ms, 50)))


@contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def onnx_latency(path: str | Path, wave: np.ndarray, threads: int, repeats: int, warmup: int = 3) -> Latency:
    from serkd.deploy.predict import session

    runner = session(path, threads=threads)
    feed = {runner.get_inputs()[0].name: wave[None]}
    return measure(lambda: runner.run(None, feed), threads, repeats, warmup)


def torch_latency(fn: Callable[[], object], threads: int, repeats: int, warmup: int = 2) -> Latency:
    with torch_threads(threads), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' attention-mask deprecation notes, once per call
        return measure(fn, threads, repeats, warmup)


def count_flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    # no_grad, not inference_mode: WavLM's weight-normed conv cannot rebuild its weight under the latter
    with FlopCounterMode(display=False) as counter, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn()
    return int(counter.get_total_flops())


# ---------------------------------------------------------------- models
def student_from_metadata(meta: dict[str, str]) -> nn.Module:
    """The graph's torch twin with random weights (for FLOPs and the same-runtime comparison)."""
    from serkd import models
    from serkd.deploy.export import deployable

    try:
        ck = {"model": meta["model"], "labels": json.loads(meta["labels"]),
              "features": json.loads(meta["features"]), "model_options": json.loads(meta.get("model_options", "{}"))}
    except (KeyError, ValueError):
        raise SerkdError("the graph has no serkd metadata (model, labels, features): export it with serkd export") \
            from None
    torch.manual_seed(0)
    student = models.create(ck["model"], num_classes=len(ck["labels"]), **ck["model_options"]).eval()
    return deployable(ck, student)


@dataclass
class Teacher:
    name: str
    module: nn.Module
    inputs: Callable[[np.ndarray], dict]
    note: str

    def forward(self, wave: np.ndarray):
        return self.module(**self.inputs(wave))


def teacher(spec: str, num_labels: int) -> Teacher | None:
    """Build the teacher named by ``spec`` (see the module docstring); ``none`` gives None."""
    if spec == "none":
        return None
    labels = [f"class{i}" for i in range(num_labels)]
    try:
        from serkd.models import wavlm_teacher as wt
    except ImportError:  # the shared teacher module is optional here: build from transformers directly
        wt = None
    if spec == "auto":
        found = _base_plus_on_disk(wt, labels)
        if found is not None:
            return found
        spec = "base-plus-config"  # Base+ size, random init: timing needs the architecture, not the weights
    if spec in ("tiny", "base-plus-config"):
        size = "tiny" if spec == "tiny" else "base-plus"
        torch.manual_seed(0)
        if wt is not None:
            model = wt.build(wt.wavlm_config(size), labels).eval()
            return Teacher(spec, model, lambda w: model.inputs([w]), _note(size))
        return _fallback_teacher(spec, size, num_labels)
    if spec.startswith(("/", ".", "~")) and not Path(spec).expanduser().is_dir():  # a path, not a hub id
        raise SerkdError(f"{spec}: teacher folder not found")
    if wt is None:
        raise SerkdError(f"teacher {spec!r}: loading a checkpoint needs serkd.models.wavlm_teacher")
    model = wt.load(wt.resolve(spec), labels).eval()
    return Teacher(spec, model, lambda w: model.inputs([w]), f"{spec} (pretrained weights, random head)")


def _note(size: str) -> str:
    return ("tiny random-init WavLM (2 layers, hidden 32), not WavLM Base+" if size == "tiny"
            else "WavLM Base+ architecture, random init (timing only)")


def _base_plus_on_disk(wt, labels: list[str]) -> Teacher | None:
    if wt is None:
        return None
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # 'auto' looks in the local cache only, never downloads
    try:
        model = wt.load(wt.resolve(wt.HUB_BASE_PLUS), labels).eval()
    except SerkdError:
        return None
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before
    return Teacher("base-plus", model, lambda w: model.inputs([w]), "WavLM Base+ (pretrained weights, random head)")


def _fallback_teacher(spec: str, size: str, num_labels: int) -> Teacher:
    from transformers import WavLMConfig, WavLMForSequenceClassification

    # WavLMConfig's defaults are the Base / Base+ architecture (768 hidden, 12 layers, 12 heads, 3072, 7 convs)
    options = {} if size == "base-plus" else {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "conv_dim": (32,) * 4, "conv_kernel": (20, 8, 4, 4), "conv_stride": (10, 4, 4, 2),
        "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4, "num_buckets": 32,
        "max_bucket_distance": 100, "classifier_proj_size": 32}
    model = WavLMForSequenceClassification(WavLMConfig(num_labels=num_labels, use_weighted_layer_sum=True,
                                                       layerdrop=0.0, **options)).eval()

    def inputs(wave: np.ndarray) -> dict:
        x = torch.from_numpy(wave)[None]
        return {"input_values": (x - x.mean()) / torch.sqrt(x.var() + 1e-7)}

    return Teacher(spec, model, inputs, _note(size))


# ---------------------------------------------------------------- the benchmark
def bench_student(model_path: str | Path, seconds: float = CLIP_SECONDS, repeats: int = 30,
                  thread_counts: tuple[int, ...] = (1,)) -> dict:
    """The graph in onnxruntime and its torch twin: size, FLOPs, latency per thread count."""
    from serkd.deploy.predict import OnnxClassifier

    model_path = Path(model_path)
    meta = OnnxClassifier(model_path).metadata  # validates the file and its metadata
    wave = clip(seconds, int(meta["sample_rate"]))
    twin = student_from_metadata(meta)
    x = torch.from_numpy(wave)[None]
    flops = {"total": count_flops(lambda: twin(x)), "frontend": count_flops(lambda: twin.frontend(x))}
    flops["network"] = flops["total"] - flops["frontend"]
    return {
        "model": meta["model"], "path": str(model_path), "size_bytes": model_path.stat().st_size,
        "quantization": meta.get("quantization", "none"), "labels": json.loads(meta["labels"]),
        "feature_length": json.loads(meta["features"])["length"],
        "parameters": sum(p.numel() for p in twin.student.parameters()), "flops": flops,
        "onnx": {str(n): onnx_latency(model_path, wave, n, repeats).summary(seconds) for n in thread_counts},
        # the torch twin is float32: a quantized graph has none to compare with
        "torch": None if meta.get("quantization", "none") != "none" else {
            str(n): torch_latency(lambda: twin(x), n, repeats).summary(seconds) for n in thread_counts},
    }


def bench_teacher(spec: str, num_labels: int, seconds: float = CLIP_SECONDS, repeats: int = 10,
                  thread_counts: tuple[int, ...] = (1,)) -> dict | None:
    """The teacher in torch eager on the same clip: parameters, FLOPs, latency per thread count."""
    return measure_teacher(teacher(spec, num_labels), seconds, repeats, thread_counts)


def measure_teacher(built: Teacher | None, seconds: float = CLIP_SECONDS, repeats: int = 10,
                    thread_counts: tuple[int, ...] = (1,)) -> dict | None:
    if built is None:
        return None
    wave = clip(seconds)
    params = sum(p.numel() for p in built.module.parameters())
    return {
        "name": built.name, "note": built.note, "parameters": params, "size_bytes": 4 * params,
        "flops": count_flops(lambda: built.forward(wave)),
        "torch": {str(n): torch_latency(lambda: built.forward(wave), n, repeats).summary(seconds)
                  for n in thread_counts},
    }


def environment(seconds: float, threads: int) -> dict:
    """What the numbers depend on; the load average says whether the CPUs were shared while timing."""
    return {"clip_seconds": seconds, "threads_all": threads, "cpu": _cpu_name(), "cores": os.cpu_count(),
            "cpu_flags": cpu_flags(), "onnxruntime": _version("onnxruntime"), "torch": torch.__version__,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def bench(model_path: str | Path, teacher_spec: str = "auto", seconds: float = CLIP_SECONDS, repeats: int = 30,
          teacher_repeats: int = 10, threads: int | None = None) -> dict:
    """Measure the graph and the teacher side by side; a JSON-ready dict (the CLI renders it)."""
    n_all = threads or all_threads()
    counts = tuple(sorted({1, n_all}))
    from serkd.deploy.predict import OnnxClassifier

    result = environment(seconds, n_all)
    built = teacher(teacher_spec, len(OnnxClassifier(model_path).labels))  # a bad spec fails before any timing
    result["student"] = bench_student(model_path, seconds, repeats, counts)
    result["teacher"] = measure_teacher(built, seconds, teacher_repeats, counts)
    result["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["targets"] = targets(result)
    result["headline"] = headline(result)
    return result


def _duration(ms: float) -> str:
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _times(x: float) -> str:
    return f"{x:,.0f}x" if x >= 10 else f"{x:.1f}x"


def headline(result: dict) -> list[str]:
    """The result in a user's words, one thread (onnxruntime for the student, torch for the teacher)."""
    student, seconds = result["student"], result["clip_seconds"]
    lat = student["onnx"]["1"]
    name = student["model"] + _quantized(student.get("quantization", "none"))
    lines = [f"{name} runs {_times(lat['x_realtime'])} faster than real time on one CPU thread: {seconds:g} s of "
             f"audio in {_duration(lat['p50_ms'])} ({student['size_bytes'] / 1e6:.1f} MB, "
             f"{student['flops']['total'] / 1e9:.2g} GFLOP per clip)"]
    if lat.get("cpu_p50_ms") and lat["p50_ms"] > WAITED * lat["cpu_p50_ms"]:
        load = result.get("load_average") or [0.0]
        lines[0] += (f"; its CPU time is {_duration(lat['cpu_p50_ms'])} ({_times(lat['x_realtime_cpu'])} real time): "
                     f"the machine was busy (load {load[0]:.1f} on {result.get('cores')} CPUs), so the wall time "
                     "includes waiting for a CPU")
    t = result.get("teacher")
    if t is not None:
        t_ms = t["torch"]["1"]["p50_ms"]
        lines.append(f"the teacher, {t['note'] if t['name'] != 'base-plus' else 'WavLM Base+'}, takes "
                     f"{_duration(t_ms)} for the same clip ({_times(t['torch']['1']['x_realtime'])} real time, "
                     f"{t['size_bytes'] / 1e6:.0f} MB, {t['flops'] / 1e9:.3g} GFLOP): the student is "
                     f"{_times(t_ms / lat['p50_ms'])} faster and {_times(t['size_bytes'] / student['size_bytes'])} "
                     "smaller")
    return lines


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """Which of :data:`CPU_FLAGS` the CPU has (Linux: /proc/cpuinfo's flags or ARM Features); [] elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    present = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            present.update(line.split(":", 1)[1].split())
    return [flag for flag in CPU_FLAGS if flag in present]


def targets(result: dict) -> list[dict]:
    """Each target with the measured value and whether it is met (one thread throughout)."""
    student, rows = result["student"], []
    goal = REALTIME_TARGETS.get(student["model"])
    one = student["onnx"]["1"]
    realtime = one.get("x_realtime_cpu") or one["x_realtime"]
    if goal is not None:
        rows.append({"target": f"{student['model']} end to end >= {goal:g}x real time (1 thread, onnxruntime, CPU "
                               "time per clip)", "value": realtime, "goal": goal, "met": realtime >= goal,
                     "wall_value": one["x_realtime"]})
    t = result.get("teacher")
    if t is not None:
        flop_ratio = t["flops"] / student["flops"]["total"]
        deploy = t["torch"]["1"]["p50_ms"] / student["onnx"]["1"]["p50_ms"]
        goal = SPEEDUP_FRACTION * flop_ratio
        if student["torch"] is not None:
            same = t["torch"]["1"]["p50_ms"] / student["torch"]["1"]["p50_ms"]
            rows.append({"target": f"speed-up vs {t['name']} >= {SPEEDUP_FRACTION} x FLOP ratio ({flop_ratio:.3g}): "
                                   "both torch eager, 1 thread", "value": same, "goal": goal, "met": same >= goal})
        rows.append({"target": f"speed-up vs {t['name']} >= {SPEEDUP_FRACTION} x FLOP ratio ({flop_ratio:.3g}): "
                               "student onnxruntime, teacher torch eager, 1 thread", "value": deploy, "goal": goal,
                     "met": deploy >= goal})
    return rows


def format_rows(result: dict) -> list[dict]:
    """One row per (model, runtime, threads) for a table."""
    rows = []
    s = result["student"]
    for runtime in ("onnx", "torch"):
        for threads, lat in (s[runtime] or {}).items():
            rows.append({"model": s["model"] + _quantized(s["quantization"]),
                         "runtime": "onnxruntime" if runtime == "onnx" else "torch", "threads": threads,
                         "p50_ms": lat["p50_ms"], "p95_ms": lat["p95_ms"], "min_ms": lat["min_ms"],
                         "x_realtime": lat["x_realtime"], "cpu_p50_ms": lat.get("cpu_p50_ms"),
                         "x_realtime_cpu": lat.get("x_realtime_cpu"), "gflop": s["flops"]["total"] / 1e9,
                         "size_mb": s["size_bytes"] / 1e6})
    t = result.get("teacher")
    if t is not None:
        for threads, lat in t["torch"].items():
            rows.append({"model": f"teacher {t['name']}", "runtime": "torch", "threads": threads,
                         "p50_ms": lat["p50_ms"], "p95_ms": lat["p95_ms"], "min_ms": lat["min_ms"],
                         "x_realtime": lat["x_realtime"], "cpu_p50_ms": lat.get("cpu_p50_ms"),
                         "x_realtime_cpu": lat.get("x_realtime_cpu"), "gflop": t["flops"] / 1e9,
                         "size_mb": t["size_bytes"] / 1e6})
    return rows


def _quantized(quantization: str) -> str:
    return "" if quantization == "none" else " int8-static" if "static" in quantization else " int8"


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"
