"""Small hand-made ONNX graphs for tests."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes, inputs, outputs, inits=(), opset=13):
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def branchy_cnn(seed=0):
    """conv+bias -> relu -> split -> add -> concat -> maxpool -> flatten -> gemm, input 1x3x8x8."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B"),
        numpy_helper.from_array(rng.standard_normal((10, 128)).astype(np.float32), "W2"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Split", ["r"], ["s1", "s2"], axis=1),
        helper.make_node("Add", ["s1", "s2"], ["a"]),
        helper.make_node("Concat", ["a", "s1"], ["cc"], axis=1),
        helper.make_node("MaxPool", ["cc"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "W2"], ["output"], transB=1),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                      [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])], inits)
