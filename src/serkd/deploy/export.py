"""Export a trained student (a run's fold folder) to one ONNX graph: waveform in, class probabilities out.

The graph is ``FrontEnd`` (crop, normalise, pad, STFT, mel/MFCC, dB: :mod:`serkd.deploy.frontend`)
followed by the student and a softmax. Input ``waveform``: float32 (batch, samples), 16 kHz mono,
both dimensions dynamic (rows of one batch share a length); output ``probs``: (batch, classes) in
the order of the ``labels`` metadata entry.

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), the supported one in torch
2.14: the legacy TorchScript exporter is deprecated, and its tracer records the input length as a
constant unless the crop is rewritten around traced ``Shape`` tensors. With dynamo the only
length-dependent part, the crop, is a custom op with a static output shape and an onnxscript
translation (``ONNX_TRANSLATIONS``), so the exported graph has no shape guards. The example batch
has two rows so the batch dimension is not specialised to 1.

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
from serkd.deploy.frontend import ONNX_OPSET, ONNX_TRANSLATIONS, FrontEnd
from serkd.errors import SerkdError
from serkd.io import atomic_write_with
from serkd.train.checkpoint import load_checkpoint

INPUT = "waveform"
OUTPUT = "probs"
PARITY_ATOL = 1e-4  # probabilities: onnxruntime against the torch module at export time


class Deployable(nn.Module):
    """Waveform (batch, samples) -> class probabilities (batch, classes)."""

    def __init__(self, frontend: FrontEnd, student: nn.Module, outputs_probabilities: bool = False):
        super().__init__()
        self.frontend = frontend
        self.student = student
        self.outputs_probabilities = outputs_probabilities  # the seed's head already ends in a softmax

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        out = self.student(self.frontend(waveform).unsqueeze(1))
        return out if self.outputs_probabilities else out.softmax(dim=-1)


def feature_config(meta: dict) -> FeatureConfig:
    """The checkpoint's feature preset, parameters included (a run may have overridden them)."""
    features = meta.get("features") or {}
    try:
        return FeatureConfig(features["kind"], int(features["length"]), int(features.get("sample_rate", 16000)),
                             dict(features.get("params") or {}))
    except KeyError as exc:
        raise SerkdError(f"checkpoint has no feature config ({exc} missing)") from None


def deployable(meta: dict, student: nn.Module) -> Deployable:
    seed_softmax = bool((meta.get("model_options") or {}).get("seed_softmax"))
    return Deployable(FrontEnd(feature_config(meta)), student, outputs_probabilities=seed_softmax).eval()


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
        "input": f"{INPUT}: float32 (batch, samples), mono, any length; cropped/padded to the feature length",
        "output": f"{OUTPUT}: float32 (batch, classes), probabilities in the order of 'labels'",
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


def to_onnx(module: Deployable, example_length: int) -> onnx.ModelProto:
    """Trace ``module`` with dynamic batch and length; the example length only needs to exceed 1."""
    batch, samples = torch.export.Dim("batch"), torch.export.Dim("samples")
    example = torch.randn(2, max(example_length, 2), generator=torch.Generator().manual_seed(0))
    # the exporter's progress lines and torch.export's warnings are not the user's business
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with torch.no_grad():
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=ONNX_OPSET, input_names=[INPUT],
                                    output_names=[OUTPUT], dynamic_shapes=({0: batch, 1: samples},),
                                    custom_translation_table=ONNX_TRANSLATIONS, verbose=False)
    return program.model_proto


def parity_signals(length: int, seed: int = 0) -> list[np.ndarray]:
    """Waves shorter than, equal to and longer than the crop length (tones in noise): every crop path."""
    rng = np.random.default_rng(seed)
    waves = []
    for n in (max(length // 3, 2), length, length + length // 2 + 1):
        t = np.arange(n) / 16000
        waves.append((0.3 * np.sin(2 * np.pi * 220 * t * (1 + t)) + 0.05 * rng.standard_normal(n)).astype(np.float32))
    return waves


def max_difference(module: Deployable, proto: onnx.ModelProto, waves: list[np.ndarray]) -> float:
    """Largest |p_onnxruntime - p_torch| over the waves."""
    from serkd.deploy.predict import session

    runner = session(proto.SerializeToString(), threads=1)
    worst = 0.0
    for wave in waves:
        with torch.no_grad():
            expected = module(torch.from_numpy(wave)[None]).numpy()
        got = runner.run(None, {INPUT: wave[None]})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
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
