"""int8 versions of an exported graph: int8 weights (any CPU, float32 speed) and static int8 (int8 compute).

Both keep the front-end in float32 (:func:`serkd.deploy.export.frontend_nodes`): its DFT and mel matrices
feed a log over an 80 dB range, which 8-bit weights would wreck.

``quantize_int8`` (``serkd export --int8``) stores the student's Conv / Gemm / MatMul weights as int8,
symmetric per output channel, each with a float32 scale, and rebuilds the float weight in the graph as
``Cast(int8 -> float) * scale``. onnxruntime folds those nodes into a float32 constant when it loads the
graph, so the graph runs exactly as fast as the float32 one (measured: 1.00x on mobilenetv3_small_075)
at under a third of its size; no calibration audio is needed. It replaced onnxruntime's dynamic
quantization, which computes in int8 but quantizes every activation per call and runs ConvInteger,
and was slower than float32 on every CPU measured (0.5-0.7x, AVX2 and AVX512-VNNI alike). A
``DequantizeLinear`` on the weights instead would not be folded (onnxruntime keeps Q/DQ nodes for its
int8 fusions unless the session disables them) and ran at 0.5x.

``quantize_int8_static`` (``--int8-static``) is onnxruntime's static quantization in QDQ form: activation
ranges calibrated once on real waveforms (the fold's training utterances, through a
``CalibrationDataReader``), int8 weights per channel, uint8 activations (the U8S8 kernels: VNNI's
``vpdpbusd`` on x86); onnxruntime fuses each DequantizeLinear-Conv-QuantizeLinear into one QLinearConv.
Two kinds of convolution stay float32, because onnxruntime's int8 kernels are far slower than its float
ones for them (measured on one thread of an AVX512-VNNI CPU): a convolution of a **single input channel**
(the students' first layers on the 1-channel feature map: int8 im2col + GEMM over a reduction of only
kernel-height x kernel-width values, 13-30x slower than the float32 NCHWc kernel: Light-SERNet+'s four
parallel path convolutions took 25 ms of its 34 ms int8 graph), and **depthwise** convolutions (int8
made mobilenetv3_small_075 10 % slower). With them in float32, Light-SERNet+ in static int8 runs 1.9x
faster than float32. mobilenetv3_small_075 stays about 1.1x slower: onnxruntime has no int8 hard-swish,
so each of its 28 hard-swish / hard-sigmoid activations runs in float32 between a DequantizeLinear and
a QuantizeLinear; ``--int8`` is its fast small graph. The exporter's per-node debugging metadata is
dropped from the int8 graphs (it is a tenth of a small graph's file).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from serkd.deploy.export import INPUT, _set_metadata, frontend_nodes, read_metadata, recompact
from serkd.errors import SerkdError
from serkd.io import atomic_write_with

CALIBRATION_CLIPS = 64  # enough for min/max ranges of a CNN; each costs one float32 inference
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


def _name_nodes(proto: onnx.ModelProto) -> None:
    """The quantizer excludes nodes by name: give every node one."""
    for i, node in enumerate(proto.graph.node):
        node.name = node.name or f"serkd_node_{i}"


def _strip_debug_metadata(proto: onnx.ModelProto) -> None:
    for node in proto.graph.node:
        del node.metadata_props[:]


def _weight_axis(node: onnx.NodeProto, rank: int) -> int:
    """The output-channel axis of the node's weight (input 1): Conv [out, in, ...], Gemm [out, in] with
    transB (else [in, out]), MatMul [in, out]."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if any(a.name == "transB" and a.i for a in node.attribute) else 1
    return rank - 1


def int8_weights(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel: (int8 values in [-127, 127], float32 scales shaped to broadcast)."""
    reduce = tuple(i for i in range(weight.ndim) if i != axis)
    shape = [1] * weight.ndim
    shape[axis] = -1
    scale = (np.maximum(np.abs(weight).max(axis=reduce), np.finfo(np.float32).tiny) / 127.0).reshape(shape)
    values = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    return values, scale.astype(np.float32)


def quantize_int8(src: str | Path, out: str | Path) -> dict:
    """int8 weights of the student, rebuilt as float32 at load time (see the module docstring)."""
    src, out = Path(src), Path(out)
    proto = onnx.load(str(src))
    props = read_metadata(proto)
    _name_nodes(proto)
    front = set(frontend_nodes(proto))
    initializers = {init.name: init for init in proto.graph.initializer}
    users: dict[str, int] = {}
    for node in proto.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    rebuilt, nodes = set(), []
    for node in proto.graph.node:
        if node.op_type not in WEIGHT_OPS or node.name in front or len(node.input) < 2:
            continue
        name = node.input[1]
        init = initializers.get(name)
        # a weight shared with another node (or the front-end) keeps its float32 copy
        if init is None or name in rebuilt or users.get(name) != 1 or init.data_type != onnx.TensorProto.FLOAT:
            continue
        weight = numpy_helper.to_array(init)
        if weight.ndim < 2:
            continue
        values, scale = int8_weights(weight, _weight_axis(node, weight.ndim))
        init.CopyFrom(numpy_helper.from_array(values, f"{name}_int8"))
        proto.graph.initializer.append(numpy_helper.from_array(scale, f"{name}_scale"))
        nodes += [helper.make_node("Cast", [f"{name}_int8"], [f"{name}_float"], to=onnx.TensorProto.FLOAT,
                                   name=f"{name}_int8_cast"),
                  helper.make_node("Mul", [f"{name}_float", f"{name}_scale"], [name], name=f"{name}_int8_scale")]
        rebuilt.add(name)
    if not rebuilt:
        raise SerkdError(f"{src}: no student weights to quantize")
    for node in reversed(nodes):  # before their users: the graph stays topologically sorted
        proto.graph.node.insert(0, node)
    _strip_debug_metadata(proto)
    _set_metadata(proto, {**props, "quantization": "int8 weights (symmetric per output channel, float32 scales; "
                                                    "onnxruntime rebuilds float32 weights at load: float32 compute)"})
    atomic_write_with(out, lambda tmp: onnx.save(proto, str(tmp)), suffix=".onnx")
    return {"fp32_bytes": src.stat().st_size, "int8_bytes": out.stat().st_size, "excluded_nodes": len(front),
            "quantized_weights": len(rebuilt)}


def float_convs(proto: onnx.ModelProto) -> list[str]:
    """Convolutions that stay float32 in static int8: a single input channel, or depthwise (module docstring)."""
    initializers = {init.name: init for init in proto.graph.initializer}
    names = []
    for node in proto.graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if weight is not None and len(weight.dims) >= 2 and weight.dims[1] == 1:  # one input channel per group
            names.append(node.name)
    return names


def quantize_int8_static(src: str | Path, out: str | Path, waves) -> dict:
    """Static int8 (QDQ) quantization of the student, activation ranges calibrated on ``waves`` (an iterable of
    1-D float32 waveforms at the graph's rate, e.g. the fold's training utterances); the front-end and the
    convolutions of :func:`float_convs` stay float32."""
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

    kept_float: list[str] = []

    def write(tmp: Path) -> None:
        prepared = tmp.with_name(tmp.name + ".pre.onnx")
        quiet = logging.getLogger()  # the quantizer logs hints on the root logger
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
            proto = onnx.load(str(prepared))
            _name_nodes(proto)
            onnx.save(proto, str(prepared))
            kept_float.extend(float_convs(proto))
            quantize_static(str(prepared), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                            nodes_to_exclude=frontend_nodes(proto) + kept_float)
        finally:
            quiet.setLevel(level)
            prepared.unlink(missing_ok=True)
        quantized = onnx.load(str(tmp))
        _strip_debug_metadata(quantized)
        recompact(quantized)  # the pre-processing folded the front-end's factored constant back
        _set_metadata(quantized, {**props, "quantization": f"int8 static QDQ (onnxruntime, s8 weights per channel, u8 "
                                                           f"activations calibrated on {len(waves)} clips; "
                                                           f"{len(kept_float)} single-input-channel or depthwise "
                                                           "convolution(s) kept float32)"})
        onnx.save(quantized, str(tmp))

    atomic_write_with(out, write, suffix=".onnx")
    return {"fp32_bytes": src.stat().st_size, "int8_bytes": out.stat().st_size, "calibration_clips": len(waves),
            "float_convs": len(kept_float)}
