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


def edge_cnn(seed=0, size=19):
    """Every slicing rule at once: strided, dilated and depthwise convs, a residual add with a
    broadcast bias, ceil-mode max pooling, padded average pooling, two branches joined by concat,
    global pooling, dense and softmax. Input 1x3xSIZExSIZE."""
    rng = np.random.default_rng(seed)

    def w(name, *shape):
        return numpy_helper.from_array((0.3 * rng.standard_normal(shape)).astype(np.float32), name)

    inits = [w("W1", 8, 3, 3, 3), w("B1", 8), w("Wd", 8, 1, 3, 3), w("bias", 1, 8, 1, 1), w("W2", 12, 8, 1, 1),
             w("Wa", 6, 12, 3, 3), w("Wb", 6, 12, 1, 1), w("Wf", 10, 12), w("Bf", 10)]
    nodes = [
        helper.make_node("Conv", ["input", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "Wd"], ["dw"], pads=[2, 2, 2, 2], dilations=[2, 2], group=8),
        helper.make_node("Add", ["dw", "r1"], ["res"]),
        helper.make_node("Add", ["res", "bias"], ["biased"]),
        helper.make_node("MaxPool", ["biased"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        helper.make_node("Conv", ["p1", "W2"], ["c2"]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "Wa"], ["ba"], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["r2"], ["pb"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("Conv", ["pb", "Wb"], ["bb"]),
        helper.make_node("Concat", ["ba", "bb"], ["cat"], axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "Wf", "Bf"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["output"], axis=1),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
                      [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])], inits)
