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

``quantize_int8`` is onnxruntime's dynamic quantization (weights int8 ahead of time, activations
quantized per call, so no calibration data is needed) of the student's Conv / MatMul / Gemm nodes.
The front-end is left in float32: its DFT and mel matrices feed a log over an 80 dB range, which
8-bit weights would wreck. Weights are unsigned 8-bit: onnxruntime's ConvInteger runs the u8 x u8
case several times faster than u8 x s8 on x86 (measured on the Light-SERNet+ graph).

``quantize_int8_static`` is onnxruntime's static quantization in QDQ form: activation ranges are
calibrated once on real waveforms (the fold's training utterances, through a ``CalibrationDataReader``),
so at run time onnxruntime fuses each DequantizeLinear-Conv-QuantizeLinear into one QLinearConv with no
per-call range computation. The graph is pre-processed first (shape inference, BatchNorm folded into the
convs: ``quant_pre_process``) so the quantized convs are the ones that run; the front-end again stays
float32. Weights int8 per channel, activations uint8 (the U8S8 kernels of x86).
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


def quantize_int8(src: str | Path, out: str | Path) -> dict:
    """Dynamic int8 quantization of the student's weights; the front-end stays float32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, out = Path(src), Path(out)
    proto = onnx.load(str(src))
    props = read_metadata(proto)
    for i, node in enumerate(proto.graph.node):  # the quantizer excludes nodes by name
        node.name = node.name or f"serkd_node_{i}"
    excluded = frontend_nodes(proto)

    def write(tmp: Path) -> None:
        named = tmp.with_name(tmp.name + ".named.onnx")
        try:
            onnx.save(proto, str(named))
            quiet = logging.getLogger()  # the quantizer logs a pre-processing hint on the root logger
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                quantize_dynamic(named, tmp, weight_type=QuantType.QUInt8, per_channel=True,
                                 op_types_to_quantize=["Conv", "MatMul", "Gemm"], nodes_to_exclude=excluded)
            finally:
                quiet.setLevel(level)
        finally:
            named.unlink(missing_ok=True)
        quantized = onnx.load(str(tmp))
        _set_metadata(quantized, {**props, "quantization": "int8 dynamic (onnxruntime, u8 weights per channel)"})
        onnx.save(quantized, str(tmp))

    atomic_write_with(out, write, suffix=".onnx")
    return {"fp32_bytes": src.stat().st_size, "int8_bytes": out.stat().st_size, "excluded_nodes": len(excluded)}


CALIBRATION_CLIPS = 64  # enough for min/max ranges of a CNN; each costs one float32 inference


def quantize_int8_static(src: str | Path, out: str | Path, waves) -> dict:
    """Static int8 (QDQ) quantization of the student, activation ranges calibrated on ``waves`` (an iterable of
    1-D float32 waveforms at the graph's rate, e.g. the fold's training utterances); the front-end stays float32.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, out = Path(src), Path(out)
    props = read_metadata(src)
    waves = [np.ascontiguousarray(w, dtype=np.float32)[None] for w in waves]
    if not waves:
        raise SerkdError(f"{src}: static int8 needs calibration audio (no waveforms given)")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter({INPUT: w} for w in waves)

        def get_next(self):
            return next(self.feeds, None)

    def write(tmp: Path) -> None:
        prepared = tmp.with_name(tmp.name + ".pre.onnx")
        quiet = logging.getLogger()  # the quantizer logs hints on the root logger
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
            proto = onnx.load(str(prepared))
            for i, node in enumerate(proto.graph.node):  # the quantizer excludes nodes by name
                node.name = node.name or f"serkd_node_{i}"
            onnx.save(proto, str(prepared))
            quantize_static(str(prepared), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv", "MatMul", "Gemm"], nodes_to_exclude=frontend_nodes(proto))
        finally:
            quiet.setLevel(level)
            prepared.unlink(missing_ok=True)
        quantized = onnx.load(str(tmp))
        _set_metadata(quantized, {**props, "quantization": f"int8 static QDQ (onnxruntime, s8 weights per channel, u8 "
                                                           f"activations calibrated on {len(waves)} clips)"})
        onnx.save(quantized, str(tmp))

    atomic_write_with(out, write, suffix=".onnx")
    return {"fp32_bytes": src.stat().st_size, "int8_bytes": out.stat().st_size, "calibration_clips": len(waves)}
