#!/usr/bin/env python3
"""Convert face-api.js FaceExpressionNet (tfjs weights, MIT) to ONNX with numpy + onnx only.

The public source is the npm package @vladmandic/face-api@1.7.15: model/face_expression_model.json
(the tfjs weights manifest) and model/face_expression_model.bin (the weights). The network is
re-created from face-api.js's source, as in ../shared/models/tools/build_faceapi_expression_onnx.py,
but written straight to an ONNX graph, so no TensorFlow is needed:

  input 'input' f32 [N,112,112,3] NHWC, already normalised ((rgb - mean) / 255, done by the caller)
  -> 4 dense blocks of (separable) 3x3 convs with ReLU and additive skip connections
  -> 7x7 average pool -> fully connected 256 -> 7 -> softmax -> output 'probs' [N,7]
     (order: neutral, happy, sad, angry, fear, disgust, surprised)

Usage: convert_faceapi.py --manifest face_expression_model.json --weights face_expression_model.bin --out OUT.onnx
The output is byte-for-byte deterministic for the same inputs and package versions.
"""
import argparse
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


def load_weights(manifest_path, weights_path):
    """tfjs weights: uint8-quantised entries are de-quantised as q * scale + min, others are f32."""
    manifest = json.load(open(manifest_path))
    entries = [w for group in manifest for w in group["weights"]]
    buf = open(weights_path, "rb").read()
    offset, weights = 0, {}
    for entry in entries:
        count = int(np.prod(entry["shape"]))
        quant = entry.get("quantization")
        if quant:
            q = np.frombuffer(buf, np.uint8, count, offset).astype(np.float32)
            values = q * np.float32(quant["scale"]) + np.float32(quant["min"])
            offset += count
        else:
            values = np.frombuffer(buf, np.float32, count, offset).copy()
            offset += 4 * count
        weights[entry["name"]] = values.reshape(entry["shape"]).astype(np.float32)
    if offset != len(buf):
        raise SystemExit(f"weights file has {len(buf)} bytes, the manifest describes {offset}")
    return weights


class Graph:
    def __init__(self, weights):
        self.w = weights
        self.nodes, self.inits = [], []

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def node(self, op, inputs, name, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x, name, filters, bias, stride, group=1):
        # TensorFlow 'same' padding puts the odd extra pixel at the end (bottom/right): SAME_UPPER.
        return self.node("Conv", [x, self.const(name + "/W", filters), self.const(name + "/B", bias)], name,
                         kernel_shape=list(filters.shape[2:]), strides=[stride, stride], group=group,
                         auto_pad="SAME_UPPER")

    def separable(self, x, prefix, stride):
        """tf.separableConv2d: depthwise 3x3 (one filter per channel), pointwise 1x1, then bias."""
        depthwise = self.w[prefix + "/depthwise_filter"]          # [3,3,C,1] -> [C,1,3,3]
        pointwise = self.w[prefix + "/pointwise_filter"]          # [1,1,C,O] -> [O,C,1,1]
        channels = depthwise.shape[2]
        dw = self.conv(x, prefix + "/depthwise", depthwise.transpose(2, 3, 0, 1),
                       np.zeros(channels, np.float32), stride, group=channels)
        return self.conv(dw, prefix + "/pointwise", pointwise.transpose(3, 2, 0, 1), self.w[prefix + "/bias"], 1)

    def dense_block(self, x, prefix, first):
        if first:
            filters = self.w[prefix + "/conv0/filters"].transpose(3, 2, 0, 1)   # [3,3,I,O] -> [O,I,3,3]
            out1 = self.conv(x, prefix + "/conv0", filters, self.w[prefix + "/conv0/bias"], 2)
        else:
            out1 = self.separable(x, prefix + "/conv0", 2)
        out1 = self.node("Relu", [out1], prefix + "/relu0")
        out2 = self.separable(out1, prefix + "/conv1", 1)
        in3 = self.node("Relu", [self.node("Sum", [out1, out2], prefix + "/sum1")], prefix + "/relu1")
        out3 = self.separable(in3, prefix + "/conv2", 1)
        in4 = self.node("Relu", [self.node("Sum", [out1, out2, out3], prefix + "/sum2")], prefix + "/relu2")
        out4 = self.separable(in4, prefix + "/conv3", 1)
        return self.node("Relu", [self.node("Sum", [out1, out2, out3, out4], prefix + "/sum3")], prefix + "/relu3")


def build(weights):
    g = Graph(weights)
    x = g.node("Transpose", ["input"], "to_nchw", perm=[0, 3, 1, 2])
    for i in range(4):
        x = g.dense_block(x, f"dense{i}", first=i == 0)
    x = g.node("AveragePool", [x], "avg_pool", kernel_shape=[7, 7], strides=[2, 2])
    x = g.node("Flatten", [x], "flatten", axis=1)
    x = g.node("Gemm", [x, g.const("fc/W", weights["fc/weights"]), g.const("fc/B", weights["fc/bias"])], "fc")
    g.nodes.append(helper.make_node("Softmax", [x], ["probs"], name="probs", axis=1))
    graph = helper.make_graph(
        g.nodes, "faceapi_expression",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 112, 112, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 7])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="deepemotion-convert-faceapi", producer_version="1")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", required=True, help="face_expression_model.json (tfjs weights manifest)")
    ap.add_argument("--weights", required=True, help="face_expression_model.bin (or -shard1)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    model = build(load_weights(a.manifest, a.weights))
    with open(a.out, "wb") as f:
        f.write(model.SerializeToString(deterministic=True))


if __name__ == "__main__":
    main()
