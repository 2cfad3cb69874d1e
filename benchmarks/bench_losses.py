"""Benchmark the KD losses: speed per method, CKD against the seed's loop form, memory, step overhead.

    python benchmarks/bench_losses.py [--out benchmarks/results/bench_losses.json] [--quick] [--methods-only]
                                      [--threads N]

Measures, on the CPU in float32 (torch's default threads unless --threads):
1. forward + backward time of every registered method at B=16 and B=256, C=7 (median of repeats);
   the feature-KD methods (fitnet, pkt, sp, rkd_emb) also get random embeddings, student 128-d and
   teacher 768-d, and the backward reaches the student embedding (and fitnet's projector);
2. CKD against the seed's element-by-element Python-loop form of the same loss (rebuilt below for
   the benchmark only, and checked to give the same value and gradient). Its forward is timed at
   B=16 whole (about 10 s; --quick samples it). Its backward, where every scalar index op writes a
   gradient the size of the whole outer product, would take far longer: it is estimated from a
   sample of the loop iterations run at full size, scaled to all of them (a lower bound: the
   backward of the cube build is left out). Two speed-ups are printed: forward only (both
   measured) and per training batch (forward + backward, the seed's backward estimated);
3. peak extra resident memory of one CKD forward + backward at B=256, in a fresh subprocess: peak
   RSS (VmHWM, reset through /proc/self/clear_refs after malloc_trim) minus RSS before the call,
   so torch's allocations are seen, unlike with tracemalloc;
4. the cost of CKD over KD inside one full training step (forward, loss, backward, Adam) of the
   Light-SERNet+ student from ``serkd.models`` on 1 x 128 x 63 inputs, batch 16 (a stand-in CNN of
   similar size if serkd.models is unavailable; the output says which).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from serkd import distill
from serkd.deploy.bench import time_calls

CLASSES = 7
STUDENT_DIM, TEACHER_DIM = 128, 768  # feature-KD methods: random embeddings of these sizes
TARGETS = {"ckd_speedup_vs_loops": 10_000.0, "ckd_step_overhead_vs_kd": 0.10, "ckd_extra_mib_b256": 1024.0}


def timings(fn: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    return time_calls(fn, repeats, warmup)


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    return statistics.median(timings(fn, repeats, warmup))


def batch(b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    student = (torch.randn(b, CLASSES, generator=g) * 2).requires_grad_()
    teacher = torch.randn(b, CLASSES, generator=g) * 3
    return student, teacher, torch.randint(0, CLASSES, (b,), generator=g)


def loss_step(method: nn.Module, student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
              **embeddings: torch.Tensor) -> None:
    student.grad = None
    for emb in embeddings.values():
        emb.grad = None
    method(student, teacher, target, **embeddings).backward()


def embeddings(b: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """Feature-KD inputs: a 128-d student embedding (the timm students') and a 768-d teacher (WavLM Base+)."""
    g = torch.Generator().manual_seed(seed)
    return {"student_emb": torch.randn(b, STUDENT_DIM, generator=g).requires_grad_(),
            "teacher_emb": torch.randn(b, TEACHER_DIM, generator=g)}


# --- 1. every method ---------------------------------------------------------------------------


def bench_methods(sizes: list[int], repeats: dict[int, int]) -> list[dict]:
    rows = []
    for b in sizes:
        s, t, y = batch(b)
        emb = embeddings(b)
        for name in distill.available():
            method = distill.create(name)
            method.bind(STUDENT_DIM, TEACHER_DIM)
            kw = emb if method.needs_embeddings else {}
            both = timings(lambda m=method, s=s, t=t, y=y, kw=kw: loss_step(m, s, t, y, **kw), repeats[b])
            fwd = timings(lambda m=method, s=s, t=t, y=y, kw=kw: m(s, t, y, **kw), repeats[b])
            # The minimum shows the cost without interference from other processes on the machine.
            rows.append({"method": name, "batch": b, "classes": CLASSES,
                         "embeddings": f"{STUDENT_DIM}->{TEACHER_DIM}" if kw else None,
                         "fwd_bwd_ms": statistics.median(both) * 1e3, "fwd_bwd_min_ms": min(both) * 1e3,
                         "fwd_ms": statistics.median(fwd) * 1e3, "fwd_min_ms": min(fwd) * 1e3,
                         "repeats": repeats[b]})
    return rows


# --- 2. the seed's loop form of CKD (benchmark only) -------------------------------------------


def seed_outer_cube(cube: torch.Tensor) -> torch.Tensor:
    """[B,C,K] -> [B,C,K,B,C,K], one cube element times the whole cube at a time, as the seed does."""
    n_b, n_c, n_k = cube.shape
    return torch.stack([
        torch.stack([torch.stack([cube[i, j, k] * cube for k in range(n_k)]) for j in range(n_c)])
        for i in range(n_b)
    ])


def seed_pair_loops(diff: torch.Tensor, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The seed's two relation sums over five nested loops, scalar by scalar; stops after ``limit``
    iterations (for sampling the cost of the full loop). Returns (sub1, sub2, iterations run)."""
    n_b, n_c, n_k = diff.shape[:3]
    sub1 = sub2 = diff.new_zeros(())
    count = 0
    for k in range(n_k):
        for i in range(n_b):
            for l in range(n_b):
                for j in range(n_c):
                    for m in range(n_c):
                        if limit is not None and count >= limit:
                            return sub1, sub2, count
                        sub1 = sub1 + diff[l, j, k, i, j, k] * diff[l, m, k, i, m, k]
                        sub2 = sub2 + diff[i, m, k, i, j, k] * diff[l, m, k, l, j, k]
                        count += 1
    return sub1, sub2, count


def seed_loop_ckd(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
                  temp_range: int = 6, lambda_1: float = 0.006, lambda_2: float = 0.015,
                  alpha: float = 0.7) -> torch.Tensor:
    """The seed's CKD computed the seed's way: per-temperature Python loops, the outer-product
    tensor built one cube element at a time, and the two relation terms summed scalar by scalar over
    five nested loops. Same value as serkd's CKD; only for timing it."""
    loss_kd = student.new_zeros(())
    cubes_s, cubes_t = [], []
    for temp in range(1, temp_range):
        # reduction='mean' (B*C) on purpose, as the seed; torch warns about it, hence the filter.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            kl = F.kl_div(F.log_softmax(student / temp, dim=1), F.softmax(teacher / temp, dim=1), reduction="mean")
        loss_kd = loss_kd + alpha * temp * temp * kl + (1 - alpha) * F.cross_entropy(student, target)
        cubes_s.append(F.softmax(student / temp, dim=1))
        cubes_t.append(F.softmax(teacher / temp, dim=1))
    scd_s = seed_outer_cube(torch.stack(cubes_s, dim=-1))
    scd_t = seed_outer_cube(torch.stack(cubes_t, dim=-1))
    loss_outer = 0.00025 * (F.l1_loss(scd_s, scd_t, reduction="sum") + F.mse_loss(scd_s, scd_t, reduction="sum"))
    sub1, sub2, _ = seed_pair_loops(scd_t - scd_s)
    return loss_kd + loss_outer + lambda_1 * sub1 + lambda_2 * sub2


def bench_seed_loops(quick: bool, sample: int = 100) -> dict:
    """The loop form at B=16: forward timed whole (sampled with --quick); backward estimated from a
    sample of its loop iterations run at full size (the loops' backward alone: a lower bound).

    Each scalar index of the [B,C,K,B,C,K] difference backpropagates a gradient the size of the whole
    tensor, so the backward costs about a full-size write per index: hours at B=16. The iterations
    all cost the same, so ``sample`` of them times (total / sample) estimates the whole loop.
    """
    # Same loss, same gradient: checked on a batch small enough to run whole.
    s, t, y = batch(3, seed=1)
    loop_loss = seed_loop_ckd(s, t, y)
    loop_loss.backward()
    s2 = s.detach().clone().requires_grad_()
    fast = distill.create("ckd")(s2, t, y)
    fast.backward()
    assert torch.allclose(loop_loss, fast, rtol=1e-5), (loop_loss.item(), fast.item())
    assert torch.allclose(s.grad, s2.grad, rtol=1e-3, atol=1e-5)
    del loop_loss

    b = 16
    total_iters = 5 * b * b * CLASSES * CLASSES
    diff = torch.randn(b, CLASSES, 5, b, CLASSES, 5, requires_grad=True)
    start = time.perf_counter()
    sub1, sub2, n = seed_pair_loops(diff, sample)
    fwd_per_iter = (time.perf_counter() - start) / n
    start = time.perf_counter()
    (sub1 + sub2).backward()
    bwd_per_iter = (time.perf_counter() - start) / n
    del sub1, sub2, diff
    bwd16 = bwd_per_iter * total_iters
    # CKD timed here, next to the loop form, so that both see the same machine load.
    s, t, y = batch(b, seed=1)
    ckd = distill.create("ckd")
    ckd_fwd_ms = median_time(lambda: ckd(s, t, y), 100) * 1e3
    ckd_fwd_bwd_ms = median_time(lambda: loss_step(ckd, s, t, y), 100) * 1e3
    if quick:
        fwd16 = fwd_per_iter * total_iters
        fwd_how = f"{sample} of {total_iters:,} loop iterations x {total_iters // sample}, loops only"
    else:
        s, t, y = batch(b, seed=1)
        start = time.perf_counter()
        loop_loss = seed_loop_ckd(s, t, y)
        fwd16 = time.perf_counter() - start
        assert torch.allclose(loop_loss, distill.create("ckd")(s, t, y), rtol=1e-5)
        del loop_loss
        fwd_how = "measured at B=16"
    return {
        "seed_fwd_s_b16": fwd16, "seed_fwd_how": fwd_how,
        "seed_loops_fwd_s_b16_sampled": fwd_per_iter * total_iters,
        "seed_bwd_s_b16": bwd16,
        "seed_bwd_how": f"{sample} of {total_iters:,} loop iterations x {total_iters / sample:.0f}, loops only",
        "ckd_fwd_ms_b16": ckd_fwd_ms, "ckd_fwd_bwd_ms_b16": ckd_fwd_bwd_ms,
        "speedup_fwd_only": fwd16 / (ckd_fwd_ms / 1e3),
        "speedup_per_batch": (fwd16 + bwd16) / (ckd_fwd_bwd_ms / 1e3),
    }


# --- 3. memory ---------------------------------------------------------------------------------

_MEMORY_PROBE = """
import ctypes, gc, json, resource, sys, torch
from serkd import distill
from serkd.deploy.bench import time_calls

def status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))

b, name, params = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
g = torch.Generator().manual_seed(0)
s = torch.randn(b, 7, generator=g).requires_grad_(); t = torch.randn(b, 7, generator=g)
y = torch.randint(0, 7, (b,), generator=g)
m = distill.create(name, **params)
m(s[:2], t[:2], y[:2]).backward()  # load kernels before the baseline
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand free heap back, so new allocations show in RSS
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
    before, peak = status_kib("VmRSS:"), lambda: status_kib("VmHWM:")
except OSError:
    before, peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, \
        lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
m(s, t, y).backward()
print(peak() - before)
"""


def peak_extra_mib(b: int, name: str, **params: object) -> float:
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(b), name, json.dumps(params)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024  # ru_maxrss is in KiB on Linux


# --- 4. training-step overhead -----------------------------------------------------------------


class StandInCNN(nn.Module):
    """~600k-parameter CNN used only if serkd.models is missing."""

    def __init__(self, num_classes: int):
        super().__init__()
        widths = [1, 64, 96, 128, 160, 320]
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(widths):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                       nn.AvgPool2d(2, ceil_mode=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(320, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def student_model() -> tuple[nn.Module, str]:
    try:
        from serkd import models

        return models.create("lightsernet", num_classes=CLASSES), "serkd.models lightsernet (Light-SERNet+)"
    except Exception as err:  # the models package may be absent or in flux
        return StandInCNN(CLASSES), f"stand-in CNN (serkd.models unavailable: {err})"


def bench_step(repeats: int) -> dict:
    torch.manual_seed(0)
    model, which = student_model()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    x = torch.randn(16, 1, 128, 63)
    y = torch.randint(0, CLASSES, (16,))
    teacher = torch.randn(16, CLASSES) * 3
    methods = {name: distill.create(name) for name in ("kd", "ckd")}

    def step(method: nn.Module) -> None:
        opt.zero_grad(set_to_none=True)
        method(model(x), teacher, y).backward()
        opt.step()

    times: dict[str, list[float]] = {name: [] for name in methods}
    for name in methods:
        for _ in range(2):
            step(methods[name])
    # Back-to-back pairs in alternating order, so that drift in machine load hits both alike; the
    # overhead is the median of the per-pair ratios.
    for i in range(repeats):
        for name in (("kd", "ckd") if i % 2 == 0 else ("ckd", "kd")):
            start = time.perf_counter()
            step(methods[name])
            times[name].append(time.perf_counter() - start)
    ratios = sorted(c / k for c, k in zip(times["ckd"], times["kd"]))
    kd_ms, ckd_ms = (statistics.median(times[n]) * 1e3 for n in ("kd", "ckd"))
    # Everything but the loss is the same code in both steps, so the loss-time difference is the
    # overhead with the step's noise taken out.
    s, t, yy = batch(16)
    loss_ms = {n: median_time(lambda m=m: loss_step(m, s, t, yy), 100) * 1e3 for n, m in methods.items()}
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {"model": which, "params": sum(p.numel() for p in model.parameters()), "input": [16, 1, 128, 63],
            "kd_step_ms": kd_ms, "ckd_step_ms": ckd_ms, "overhead": statistics.median(ratios) - 1,
            "overhead_iqr": [quartiles[0] - 1, quartiles[2] - 1],
            "kd_loss_ms": loss_ms["kd"], "ckd_loss_ms": loss_ms["ckd"],
            "loss_only_overhead": (loss_ms["ckd"] - loss_ms["kd"]) / kd_ms, "repeats": repeats}


# --- report ------------------------------------------------------------------------------------


def report_methods(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="KD losses: forward + backward time, float32, CPU (ms)")
    table.add_column("method")
    table.add_column("embeddings")
    sizes = sorted({r["batch"] for r in result["methods"]})
    for b in sizes:
        table.add_column(f"B={b} median", justify="right")
        table.add_column(f"B={b} min", justify="right")
    by = {(r["method"], r["batch"]): r for r in result["methods"]}
    for name in distill.available():
        cells = []
        for b in sizes:
            cells += [f"{by[(name, b)]['fwd_bwd_ms']:.3f}", f"{by[(name, b)]['fwd_bwd_min_ms']:.3f}"]
        table.add_row(name, by[(name, sizes[0])].get("embeddings") or "", *cells)
    console.print(table)


def report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    report_methods(result)

    seed, mem, step = result["seed_loops"], result["memory"], result["step"]
    checks = Table(title="CKD against the seed and the targets")
    checks.add_column("measure")
    checks.add_column("value", justify="right")
    checks.add_column("target", justify="right")
    checks.add_column("met")
    ok = result["targets_met"]
    checks.add_row(f"seed loop form forward, B=16 ({seed['seed_fwd_how']})", f"{seed['seed_fwd_s_b16']:.2f} s",
                   "", "")
    checks.add_row(f"seed loop form backward, B=16 ({seed['seed_bwd_how']})",
                   f"{seed['seed_bwd_s_b16']:.0f} s", "", "")
    checks.add_row("serkd CKD forward, B=16", f"{seed['ckd_fwd_ms_b16']:.3f} ms", "", "")
    checks.add_row("serkd CKD forward + backward, B=16", f"{seed['ckd_fwd_bwd_ms_b16']:.3f} ms", "", "")
    checks.add_row("speed-up, forward only (both measured)", f"{seed['speedup_fwd_only']:,.0f}x", "", "")
    checks.add_row("speed-up per training batch (forward + backward)", f"{seed['speedup_per_batch']:,.0f}x",
                   ">= 10,000x", str(ok["speedup"]))
    checks.add_row("CKD peak extra memory, B=256 (peak RSS - RSS before)", f"{mem['ckd_b256_mib']:.1f} MiB",
                   "< 1024 MiB", str(ok["memory"]))
    checks.add_row("CKD (l1_algorithm='chunked') peak extra memory, B=256",
                   f"{mem['ckd_chunked_b256_mib']:.1f} MiB", "< 1024 MiB", "")
    checks.add_row("KD peak extra memory, B=256 (reference)", f"{mem['kd_b256_mib']:.1f} MiB", "", "")
    checks.add_row("dense outer products alone would take, B=256", f"{mem['dense_outer_products_mib']:.0f} MiB",
                   "", "")
    checks.add_row(f"train step, KD ({step['model']}, {step['params']:,} params, batch 16)",
                   f"{step['kd_step_ms']:.1f} ms", "", "")
    checks.add_row("train step, CKD", f"{step['ckd_step_ms']:.1f} ms", "", "")
    lo, hi = step["overhead_iqr"]
    checks.add_row(f"CKD step overhead over KD (median of {step['repeats']} paired steps; IQR "
                   f"{100 * lo:+.1f} .. {100 * hi:+.1f} %)", f"{100 * step['overhead']:+.1f} %", "<= 10 %",
                   str(ok["step_overhead"]))
    checks.add_row(f"  loss alone: CKD {step['ckd_loss_ms']:.2f} ms - KD {step['kd_loss_ms']:.2f} ms, "
                   "/ KD step", f"{100 * step['loss_only_overhead']:+.2f} %", "<= 10 %",
                   str(ok["loss_overhead"]))
    console.print(checks)
    console.print(f"load average at start: {result['env']['loadavg']}, threads: {result['env']['threads']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_losses.json"))
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no 10 s seed forward (smoke run)")
    parser.add_argument("--methods-only", action="store_true",
                        help="only the per-method timing table (no step, memory or seed-loop measures)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (default: torch's choice); 1 avoids stalls on a busy machine")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    repeats = {16: 20, 256: 5} if args.quick else {16: 100, 256: 15}
    result: dict = {"env": {"torch": torch.__version__, "python": platform.python_version(),
                            "machine": platform.machine(), "cpus": os.cpu_count(),
                            "threads": torch.get_num_threads(), "loadavg": os.getloadavg(),
                            "dtype": "float32", "device": "cpu"}}
    result["methods"] = bench_methods([16, 256], repeats)
    if args.methods_only:
        report_methods(result)
        return _write(result, args.out)
    result["step"] = bench_step(4 if args.quick else 10)
    result["memory"] = {
        "ckd_b256_mib": peak_extra_mib(256, "ckd"),
        "ckd_chunked_b256_mib": peak_extra_mib(256, "ckd", l1_algorithm="chunked"),
        "kd_b256_mib": peak_extra_mib(256, "kd"),
        "dense_outer_products_mib": 2 * (256 * CLASSES * 5) ** 2 * 4 / 2**20,
        "method": "peak RSS (VmHWM reset) minus RSS before one forward+backward, fresh subprocess",
    }
    # Last: the loop form leaves a large autograd graph and allocator state behind.
    result["seed_loops"] = bench_seed_loops(args.quick)
    result["targets"] = TARGETS
    result["targets_met"] = {
        "speedup": result["seed_loops"]["speedup_per_batch"] >= TARGETS["ckd_speedup_vs_loops"],
        "memory": result["memory"]["ckd_b256_mib"] < TARGETS["ckd_extra_mib_b256"],
        "step_overhead": result["step"]["overhead"] <= TARGETS["ckd_step_overhead_vs_kd"],
        "loss_overhead": result["step"]["loss_only_overhead"] <= TARGETS["ckd_step_overhead_vs_kd"],
    }
    report(result)
    return _write(result, args.out)


def _write(result: dict, out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
