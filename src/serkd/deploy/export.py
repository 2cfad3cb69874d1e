"""Export a trained student (a run's fold folder) to one ONNX graph: waveform in, class probabilities out.

The graph is ``FrontEnd`` (waveform normalisation for the seed's presets, padding to the feature length,
STFT, mel/MFCC/log-mel: :mod:`serkd.deploy.frontend`), the run's ``FeatureNormalizer``, the student and a
softmax. Input ``waveform``: float32 (batch, samples), 16 kHz mono, both dimensions dynamic (rows of one
batch share a length; nothing is cropped: a clip is scored whole); output ``probs``: (batch, classes) in
the order of the ``labels`` metadata entry. A ``speaker``-normalised graph also takes ``feature_mean`` and
``feature_std`` (F,), the speaker's statistics, backed by initializers of the same names holding the training
speakers' statistics (onnxruntime uses those unless the inputs are fed), and also returns ``frame_count``
(batch,), ``feature_sum`` and ``feature_sumsq`` (batch, F): the real-frame moments of the un-normalised
features, which summed over a speaker's clips give that speaker's statistics with onnxruntime alone.

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), the supported one in torch
2.14. Every length-dependent size is written so torch.export can carry it symbolically (the padding to the
feature length is ``sym_max``, frames follow from the padded length), so the graph has no shape guards and
no custom ops. The example batch has two rows so the batch dimension is not specialised to 1.
:func:`serkd.deploy.frontend.compact_frontend` then stores the front-end's largest constant as its factors
and drops the exporter's debugging metadata (a tiny student's graph shrinks from 680 to 280 KB).

After export, :func:`global_average_pools` turns the students' global mean pools (``ReduceMean`` over the
two spatial axes) into ``GlobalAveragePool``, which onnxruntime runs in its blocked NCHWc layout; as
``ReduceMean`` each one forced a reorder of the feature map out of that layout and back.

The int8 graphs (``--int8``, ``--int8-static``) are :mod:`serkd.deploy.quantize`'s.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from serkd.data.features import FeatureConfig
from serkd.deploy.frontend import (
    ONNX_OPSET,
    ONNX_TRANSLATIONS,
    FeatureNormalizer,
    FrontEnd,
    compact_frontend,
    feature_moments,
)
from serkd.errors import SerkdError
from serkd.io import atomic_write_with
from serkd.train.checkpoint import load_checkpoint

INPUT = "waveform"
OUTPUT = "probs"
# speaker-normalised graphs only: the speaker's statistics in (defaults: the training speakers'), and the
# un-normalised features' real-frame moments out, so onnxruntime alone can compute a speaker's statistics
MEAN_INPUT, STD_INPUT = "feature_mean", "feature_std"
MOMENT_OUTPUTS = ("frame_count", "feature_sum", "feature_sumsq")
PARITY_ATOL = 1e-4  # probabilities: onnxruntime against the torch module at export time


class Deployable(nn.Module):
    """Waveform (batch, samples) -> class probabilities (batch, classes).

    With a ``speaker`` normaliser it takes ``feature_mean`` / ``feature_std`` (F,) too (None: the recorded
    training speakers' statistics) and also returns the real-frame count (B,), per-bin sum and sum of squares
    (B, F) of the un-normalised features (:func:`serkd.deploy.frontend.feature_moments`)."""

    def __init__(self, frontend: FrontEnd, student: nn.Module, outputs_probabilities: bool = False,
                 normalizer: FeatureNormalizer | None = None):
        super().__init__()
        self.frontend = frontend
        self.student = student
        self.outputs_probabilities = outputs_probabilities  # the seed's head already ends in a softmax
        self.normalizer = normalizer or FeatureNormalizer(None, frontend.kind, frontend.n_mels)

    @property
    def takes_statistics(self) -> bool:
        return self.normalizer.takes_statistics

    def forward(self, waveform: torch.Tensor, feature_mean: torch.Tensor | None = None,
                feature_std: torch.Tensor | None = None):
        features = self.frontend(waveform)
        frames = self.frontend.real_frames(waveform)
        out = self.student(self.normalizer(features, frames, feature_mean, feature_std).unsqueeze(1))
        probs = out if self.outputs_probabilities else out.softmax(dim=-1)
        if not self.takes_statistics:
            return probs
        return (probs, *feature_moments(features, frames))


def feature_config(meta: dict) -> FeatureConfig:
    """The checkpoint's feature preset, parameters included (a run may have overridden them)."""
    features = meta.get("features") or {}
    try:
        return FeatureConfig(features["kind"], int(features["length"]), int(features.get("sample_rate", 16000)),
                             dict(features.get("params") or {}))
    except KeyError as exc:
        raise SerkdError(f"checkpoint has no feature config ({exc} missing)") from None


def deployable(meta: dict, student: nn.Module) -> Deployable:
    """The student behind its front-end and the normalisation ``meta`` records (a checkpoint's
    ``normalization``; without one, the feature kind's default, with placeholder statistics if it needs any:
    a twin rebuilt from a graph's metadata, for timing, whose statistics live in the graph)."""
    seed_softmax = bool((meta.get("model_options") or {}).get("seed_softmax"))
    frontend = FrontEnd(feature_config(meta))
    normalizer = FeatureNormalizer(meta.get("normalization"), frontend.kind, frontend.output_bins)
    return Deployable(frontend, student, outputs_probabilities=seed_softmax, normalizer=normalizer).eval()


def load_deployable(fold_dir: str | Path) -> tuple[Deployable, dict]:
    """The checkpoint of ``fold_dir`` (safetensors + JSON, nothing unpickled) behind its front-end."""
    student, meta = load_checkpoint(fold_dir)
    return deployable(meta, student), meta


def metadata(meta: dict, fold_dir: str | Path) -> dict[str, str]:
    """What a deployment needs to use and trust the graph, as ONNX ``metadata_props`` (strings)."""
    from serkd import __version__
    from serkd.train.provenance import git_commit

    fold = meta.get("fold") or {}
    provenance = meta.get("provenance") or {}
    return {
        "labels": json.dumps(list(meta["labels"])),
        "sample_rate": str(feature_config(meta).sample_rate),
        "features": json.dumps(meta.get("features"), sort_keys=True),
        "input": f"{INPUT}: float32 (batch, samples), mono, any length (never cropped: a clip is scored whole; one "
                 "shorter than the feature length is zero-padded to it, as in training)",
        "output": f"{OUTPUT}: float32 (batch, classes), probabilities in the order of 'labels'",
        "normalization": json.dumps(normalization_summary(meta.get("normalization"), feature_config(meta).kind),
                                    sort_keys=True),
        "model": str(meta.get("model")),
        "model_options": json.dumps(meta.get("model_options") or {}, sort_keys=True),
        "source_fold_dir": str(Path(fold_dir).resolve()),
        "source_fold": str(fold.get("name", "")),
        "source_test_speakers": json.dumps(list(fold.get("test", []))),
        "source_git_commit": str(provenance.get("git_commit", "unknown")),
        "source_data_hash": str(meta.get("data_hash", "unknown")),
        "exported_by": f"serkd {__version__} (git {git_commit()}), torch {torch.__version__}",
        "quantization": "none",
        # a final model (serkd train --final) has no test speakers: the CV scores it stands on travel with it
        **({"cv_scores": json.dumps(meta["cv"], sort_keys=True)} if meta.get("cv") else {}),
    }


def read_metadata(model: str | Path | onnx.ModelProto) -> dict[str, str]:
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def _set_metadata(proto: onnx.ModelProto, props: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)


def normalization_summary(record: dict | None, kind: str) -> dict:
    """The normalisation as the graph's metadata says it (statistics arrays stay in the graph)."""
    from serkd.data.normalize import resolve

    record = dict(record or {})
    summary = {"normalize": resolve(record.get("normalize"), kind),
               "statistics": record.get("statistics", "per utterance inside the feature (the seed's preset)")}
    if "corpus" in record:
        summary["corpus_speakers"] = record["corpus"].get("speakers")
        summary["corpus_frames"] = record["corpus"].get("frames")
    if summary["normalize"] == "speaker":
        summary["inputs"] = (f"{MEAN_INPUT}, {STD_INPUT}: float32 (F,), the speaker's per-bin mean and std (default: "
                             "the corpus statistics of the training speakers)")
        summary["outputs"] = (f"{', '.join(MOMENT_OUTPUTS)}: real-frame count (batch,), per-bin sum and sum of "
                              "squares (batch, F) of the un-normalised features: sum them over a speaker's clips, "
                              "mean = sum / count, std = sqrt(sumsq / count - mean^2 + 1e-6)")
    return summary


def to_onnx(module: Deployable, example_length: int) -> onnx.ModelProto:
    """Trace ``module`` with dynamic batch and length; the example length only needs to exceed 1. A speaker-
    normalised module gets ``feature_mean`` / ``feature_std`` inputs backed by its recorded corpus statistics
    (initializers of the same names: onnxruntime uses them unless the caller feeds the inputs) and the moment
    outputs."""
    batch, samples = torch.export.Dim("batch"), torch.export.Dim("samples")
    example = torch.randn(2, max(example_length, 2), generator=torch.Generator().manual_seed(0))
    args: tuple = (example,)
    inputs, outputs, shapes = [INPUT], [OUTPUT], [{0: batch, 1: samples}]
    if module.takes_statistics:
        args += (module.normalizer.mean.clone(), module.normalizer.std.clone())
        inputs += [MEAN_INPUT, STD_INPUT]
        outputs += list(MOMENT_OUTPUTS)
        shapes += [None, None]
    # the exporter's progress lines and torch.export's warnings are not the user's business
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with torch.no_grad():
        program = torch.onnx.export(module, args, dynamo=True, opset_version=ONNX_OPSET, input_names=inputs,
                                    output_names=outputs, dynamic_shapes=tuple(shapes),
                                    custom_translation_table=ONNX_TRANSLATIONS, verbose=False)
    proto = program.model_proto
    if module.takes_statistics:
        for name, value in ((MEAN_INPUT, module.normalizer.mean), (STD_INPUT, module.normalizer.std)):
            proto.graph.initializer.append(onnx.numpy_helper.from_array(value.numpy(), name))
    compact_frontend(proto, module.frontend)
    return proto


def parity_signals(length: int, seed: int = 0) -> list[np.ndarray]:
    """Waves much shorter than, equal to and longer than the feature length (tones in noise, at two levels):
    the padded, exact and whole paths."""
    rng = np.random.default_rng(seed)
    waves = []
    for n, level in ((max(length // 3, 2), 0.3), (length, 0.05), (length + length // 2 + 1, 0.3)):
        t = np.arange(n) / 16000
        waves.append((level * np.sin(2 * np.pi * 220 * t * (1 + t)) + 0.05 * rng.standard_normal(n)).astype(
            np.float32))
    return waves


def _feeds_and_expected(module: Deployable, wave: np.ndarray, statistics: tuple | None):
    x = torch.from_numpy(np.atleast_2d(wave))
    feeds = {INPUT: x.numpy()}
    with torch.no_grad():
        if statistics is None:
            expected = module(x)
        else:
            mean, std = (torch.from_numpy(np.asarray(v, dtype=np.float32)) for v in statistics)
            expected = module(x, mean, std)
            feeds.update({MEAN_INPUT: mean.numpy(), STD_INPUT: std.numpy()})
    expected = expected if isinstance(expected, tuple) else (expected,)
    return feeds, [e.numpy() for e in expected]


def max_difference(module: Deployable, proto: onnx.ModelProto, waves: list[np.ndarray]) -> float:
    """Largest |p_onnxruntime - p_torch| over the waves (a speaker-normalised graph: with its default statistics
    and with given ones; its moment outputs are compared too, relative to their size)."""
    from serkd.deploy.predict import session

    runner = session(proto.SerializeToString(), threads=1)
    cases: list = [None]
    if module.takes_statistics:
        mean, std = module.normalizer.mean.numpy(), module.normalizer.std.numpy()
        cases.append((mean + 0.5 * std, 1.3 * std))  # another speaker's statistics: the inputs are used
    worst = 0.0
    for wave in waves:
        for statistics in cases:
            feeds, expected = _feeds_and_expected(module, wave, statistics)
            got = runner.run(None, feeds)
            worst = max(worst, float(np.abs(got[0] - expected[0]).max()))
            for g, e in zip(got[1:], expected[1:]):  # moments: relative to their scale
                worst = max(worst, float(np.abs(g - e).max() / max(np.abs(e).max(), 1.0)))
    return worst


@dataclass
class ExportResult:
    path: Path
    size_bytes: int
    max_prob_difference: float  # onnxruntime against torch on parity_signals
    metadata: dict[str, str]


def export(fold_dir: str | Path, out: str | Path) -> ExportResult:
    """Export the fold's student; refuse to write a graph that disagrees with torch beyond PARITY_ATOL."""
    fold_dir, out = Path(fold_dir), Path(out)
    module, meta = load_deployable(fold_dir)
    if module.normalizer.placeholder:
        raise SerkdError(f"{fold_dir}: normalization {module.normalizer.normalize!r} but checkpoint.json records no "
                         "statistics (retrain the fold)")
    proto = to_onnx(module, feature_config(meta).length + 1)
    global_average_pools(proto)
    props = metadata(meta, fold_dir)
    _set_metadata(proto, props)
    proto.doc_string = f"serkd {props['model']} on {json.loads(props['features'])['kind']} features: waveform -> probs"
    difference = max_difference(module, proto, parity_signals(feature_config(meta).length))
    if not difference <= PARITY_ATOL:
        raise SerkdError(f"{out}: the exported graph differs from the torch model by {difference:.2e} "
                         f"(> {PARITY_ATOL}); not written")
    atomic_write_with(out, lambda tmp: onnx.save(proto, str(tmp)), suffix=".onnx")
    return ExportResult(out, out.stat().st_size, difference, props)


def recompact(proto: onnx.ModelProto) -> None:
    """:func:`serkd.deploy.frontend.compact_frontend` again, on a graph rewritten by a tool that folded its
    constants (the front-end rebuilt from the graph's ``features`` metadata says what to look for)."""
    features = read_metadata(proto).get("features")
    if features:
        compact_frontend(proto, FrontEnd(feature_config({"features": json.loads(features)})))


def frontend_nodes(proto: onnx.ModelProto) -> list[str]:
    """Names of the nodes the first Conv depends on: the front-end (and any padding before the convs)."""
    producer = {name: node for node in proto.graph.node for name in node.output}
    first = next((node for node in proto.graph.node if node.op_type == "Conv"), None)
    if first is None:
        raise SerkdError("no Conv node in the graph: cannot tell the front-end from the student")
    seen: set[str] = set()
    stack = list(first.input)
    while stack:
        node = producer.get(stack.pop())
        if node is not None and node.name not in seen:
            seen.add(node.name)
            stack.extend(node.input)
    return sorted(seen)



def global_average_pools(proto: onnx.ModelProto) -> int:
    """Rewrite ``ReduceMean`` over axes (2, 3) of a 4-D tensor as ``GlobalAveragePool`` (the same numbers), in
    place; returns how many. onnxruntime keeps GlobalAveragePool in its NCHWc layout, ReduceMean not."""
    from onnx import helper, numpy_helper, shape_inference

    graph = proto.graph
    inferred = shape_inference.infer_shapes(proto).graph
    rank = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in [*inferred.value_info, *inferred.input]
            if vi.type.tensor_type.HasField("shape")}
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    constants.update({node.output[0]: numpy_helper.to_array(attr.t) for node in graph.node
                      if node.op_type == "Constant" for attr in node.attribute if attr.name == "value"})
    nodes, orphans, rewritten = [], set(), 0
    for node in graph.node:
        axes = None
        if node.op_type == "ReduceMean" and rank.get(node.input[0]) == 4:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            axes = attrs.get("axes") if len(node.input) < 2 else constants.get(node.input[1])
        if axes is None or sorted(int(a) % 4 for a in np.ravel(axes)) != [2, 3]:
            nodes.append(node)
            continue
        pooled = node.output[0] if attrs.get("keepdims", 1) else f"{node.output[0]}_global_pool"
        label = node.name or node.output[0]
        nodes.append(helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], name=f"{label}_global"))
        if pooled != node.output[0]:  # keepdims=0: drop the two unit axes again
            axes_name = f"{node.output[0]}_spatial_axes"
            graph.initializer.append(numpy_helper.from_array(np.array([2, 3], dtype=np.int64), axes_name))
            nodes.append(helper.make_node("Squeeze", [pooled, axes_name], list(node.output),
                                          name=f"{label}_squeeze"))
        orphans.update(node.input[1:])
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {name for node in graph.node for name in node.input}
        for init in [init for init in graph.initializer if init.name in orphans - used]:
            graph.initializer.remove(init)  # the axes the rewritten ReduceMeans read
    return rewritten
