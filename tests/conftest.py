from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Module- and session-scoped fixtures run before any function-scoped one: without this they would read
    and write the user's own ~/.cache/serkd, whose entries another process may have computed with another BLAS
    thread count (the last bits of a feature then differ, and so would two same-seed runs)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("SERKD_CACHE", str(tmp_path_factory.mktemp("session-cache")))
    patch.setenv("HF_HUB_OFFLINE", "1")
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own feature/hash cache, so cache counts are the test's own."""
    monkeypatch.setenv("SERKD_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """4 speakers x 4 emotions x 3 utterances of 0.5-1 s: enough for folds and a 1-epoch run."""
    from serkd.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthConfig(speakers=4, per_class=3, seed=1, min_seconds=0.5, max_seconds=1.0))
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensor ops on two intra-op threads stall each other on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    return SHARED


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from serkd.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


os.environ.setdefault("OMP_NUM_THREADS", "2")
