"""Graph passes for onnxruntime speed and the int8 graphs, on small hand-built graphs (no training)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from serkd.deploy.export import frontend_nodes, global_average_pools, read_metadata
from serkd.deploy.quantize import float_convs, int8_weights, quantize_int8

RNG = np.random.default_rng(0)


def run(proto: onnx.ModelProto, feeds: dict, optimized: str | None = None) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if optimized:
        options.optimized_model_filepath = optimized
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def test_reduce_mean_over_space_becomes_global_average_pool():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 5, 7])
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("keep", "drop", "other")]
    axes = {"spatial": [2, 3], "negative": [-1, -2], "channel": [1, 2]}
    graph = helper.make_graph([
        helper.make_node("ReduceMean", ["x", "spatial"], ["keep"], keepdims=1),
        helper.make_node("ReduceMean", ["x", "negative"], ["drop"], keepdims=0),
        helper.make_node("ReduceMean", ["x", "channel"], ["other"], keepdims=1),
    ], "g", [x], outputs, [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in axes.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    data = RNG.standard_normal((2, 3, 5, 7)).astype(np.float32)
    before = run(proto, {"x": data})
    assert global_average_pools(proto) == 2
    assert [n.op_type for n in proto.graph.node] == ["GlobalAveragePool", "GlobalAveragePool", "Squeeze", "ReduceMean"]
    assert {init.name for init in proto.graph.initializer} == {"channel", "drop_spatial_axes"}  # orphaned axes go
    after = run(proto, {"x": data})
    for b, a in zip(before, after):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_int8_weights_per_output_channel():
    channel_scale = np.array([1e-3, 1.0, 10.0, 0.0])[:, None, None, None]
    weight = (RNG.standard_normal((4, 3, 2, 2)) * channel_scale).astype(np.float32)
    values, scale = int8_weights(weight, axis=0)
    assert values.dtype == np.int8 and scale.shape == (4, 1, 1, 1) and np.abs(values).max() == 127
    error = np.abs(values * scale - weight)
    assert (error <= scale / 2 + 1e-12).all()  # each channel to half its own step, the tiny one included
    assert np.all(values[3] == 0)  # an all-zero channel stays zero
    values, scale = int8_weights(weight[:, :, 0, 0].T.copy(), axis=1)  # a MatMul weight: [in, out]
    assert scale.shape == (1, 4)


def small_graph() -> onnx.ModelProto:
    """waveform (1, 64) -> 'front-end' MatMul -> (1, 1, 8, 8) -> stem conv (1 input channel) -> depthwise conv ->
    1x1 conv -> global pool -> Gemm (transB) -> probs."""
    weights = {
        "frontend_matrix": RNG.standard_normal((64, 64)).astype(np.float32) / 8,
        "shape": np.array([1, 1, 8, 8], np.int64),
        "stem": RNG.standard_normal((4, 1, 3, 3)).astype(np.float32),
        "depthwise": RNG.standard_normal((4, 1, 3, 3)).astype(np.float32),
        "pointwise": RNG.standard_normal((6, 4, 1, 1)).astype(np.float32),
        "fc": RNG.standard_normal((3, 6)).astype(np.float32),
        "fc_bias": RNG.standard_normal(3).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["waveform", "frontend_matrix"], ["spectrum"], name="front_matmul"),
        helper.make_node("Reshape", ["spectrum", "shape"], ["image"], name="front_reshape"),
        helper.make_node("Conv", ["image", "stem"], ["c1"], pads=[1, 1, 1, 1], name="stem_conv"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "depthwise"], ["c2"], pads=[1, 1, 1, 1], group=4, name="dw_conv"),
        helper.make_node("Conv", ["c2", "pointwise"], ["c3"], name="pw_conv"),
        helper.make_node("GlobalAveragePool", ["c3"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc", "fc_bias"], ["logits"], transB=1, name="fc_gemm"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax"),
    ]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    proto.metadata_props.add(key="labels", value='["a", "b", "c"]')
    proto.metadata_props.add(key="quantization", value="none")
    return proto


def test_int8_weights_graph_is_small_keeps_the_front_end_and_folds_at_load(tmp_path):
    src, out = tmp_path / "model.onnx", tmp_path / "model.int8.onnx"
    proto = small_graph()
    onnx.save(proto, str(src))
    info = quantize_int8(src, out)
    assert info["quantized_weights"] == 4 and info["excluded_nodes"] == 2  # stem, depthwise, pointwise, fc
    quantized = onnx.load(str(out))
    dtypes = {init.name: init.data_type for init in quantized.graph.initializer}
    assert dtypes["frontend_matrix"] == TensorProto.FLOAT  # the front-end's matrix is never quantized
    assert all(dtypes[f"{name}_int8"] == TensorProto.INT8 for name in ("stem", "depthwise", "pointwise", "fc"))
    assert dtypes["fc_bias"] == TensorProto.FLOAT
    assert read_metadata(quantized)["quantization"].startswith("int8 weights") and read_metadata(quantized)["labels"]
    wave = RNG.standard_normal((1, 64)).astype(np.float32)
    np.testing.assert_allclose(run(quantized, {"waveform": wave})[0], run(proto, {"waveform": wave})[0], atol=2e-2)
    # onnxruntime folds Cast * scale into float32 constants when it loads: the graph that runs is the float one
    optimized = tmp_path / "optimized.onnx"
    run(quantized, {"waveform": wave}, optimized=str(optimized))
    ops = {node.op_type for node in onnx.load(str(optimized)).graph.node}
    assert "Cast" not in ops and "DequantizeLinear" not in ops


def test_static_int8_keeps_single_channel_and_depthwise_convs_float():
    proto = small_graph()
    assert float_convs(proto) == ["stem_conv", "dw_conv"]
    assert frontend_nodes(proto) == ["front_matmul", "front_reshape"]


@pytest.mark.parametrize("keepdims", [0, 1])
def test_global_pool_rewrite_ignores_other_ranks(keepdims):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 7])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=keepdims)], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array([1, 2], np.int64), "axes")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    assert global_average_pools(proto) == 0 and proto.graph.node[0].op_type == "ReduceMean"
