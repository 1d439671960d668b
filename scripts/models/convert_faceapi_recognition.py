#!/usr/bin/env python3
"""Convert face-api.js FaceRecognitionNet (tfjs weights, MIT) to ONNX with numpy + onnx only.

The public source is the npm package @vladmandic/face-api@1.7.15: model/face_recognition_model-
weights_manifest.json (the tfjs weights manifest) and model/face_recognition_model.bin (the
weights). The network is face-api.js's port of dlib's face recognition ResNet
(dlib_face_recognition_resnet_model_v1, Davis King's weights), re-created here from the package's
src/faceRecognitionNet/*.ts and written straight to an ONNX graph, so no TensorFlow is needed:

  input 'input' f32 [N,150,150,3] NHWC RGB, already normalised by the caller:
      (pixel - [122.782, 117.001, 104.298]) / 255   (face-api's normalize(x, meanRgb).div(255))
  -> convDown 7x7/2 'valid', 32   -> max pool 3x3/2 'valid'
  -> 3 x residual 32 -> residualDown 64 + 3 x residual 64 -> residualDown 128 + 2 x residual 128
  -> residualDown 256 + 2 x residual 256 -> residualDown 256 (conv256_down_out)
  -> mean over H, W -> matMul fc [256,128] -> output 'descriptor' [N,128] (not L2-normalised;
     face-api compares descriptors by Euclidean distance, 0.6 for "same person")

Layers, as face-api.js runs them (tfjs, NHWC; here NCHW after one Transpose of the input):
  convLayer: conv2d (stride 1 'same', or stride 2 'valid' for convDown) + bias, then the scale
    layer x * weights + biases (dlib's affine layer), then ReLU unless convNoRelu;
  residual: relu(convNoRelu(conv(x)) + x);
  residualDown: out = convNoRelu(convDown(x)); the shortcut is avgPool(x, 2, 2, 'valid'), its
    channels doubled with zeros when the block widens; where 'valid' stride-2 rounding leaves
    `out` one pixel smaller than the shortcut (8 -> 3 vs 4, 4 -> 1 vs 2), `out` gets a row of
    zeros at the bottom and a column of zeros at the right; then relu(shortcut + out).
The layer arithmetic is kept as is (no folding of the scale layer into the convolution), so the
ONNX run follows the tfjs one operation for operation.

Weights: the manifest's entries are read in order from the weights file: float32, or uint8
affine-quantised (q * scale + min, computed in float64 and rounded once to float32, as tfjs's
io.decodeWeights does). tfjs filters [kh,kw,in,out] become ONNX [out,in,kh,kw].

Usage: convert_faceapi_recognition.py --manifest face_recognition_model-weights_manifest.json
         --weights face_recognition_model.bin --out OUT.onnx
The output is byte-for-byte deterministic for the same inputs and package versions.
"""
import argparse
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
SIZE = 150
MEAN_RGB = [122.782, 117.001, 104.298]   # face-api's FaceRecognitionNet.forwardInput; then / 255

# (block, kind, output channels), in face-api's forwardInput order
BLOCKS = [("conv32_1", "residual", 32), ("conv32_2", "residual", 32), ("conv32_3", "residual", 32),
          ("conv64_down", "down", 64), ("conv64_1", "residual", 64), ("conv64_2", "residual", 64),
          ("conv64_3", "residual", 64),
          ("conv128_down", "down", 128), ("conv128_1", "residual", 128), ("conv128_2", "residual", 128),
          ("conv256_down", "down", 256), ("conv256_1", "residual", 256), ("conv256_2", "residual", 256),
          ("conv256_down_out", "down", 256)]


class ConvertError(Exception):
    pass


def load_weights(manifest, weights_path):
    """All entries of a tfjs weights manifest, read in order from one weights file."""
    paths = [p for group in manifest for p in group.get("paths", [])]
    if len(paths) > 1:
        raise ConvertError(f"the manifest spreads the weights over {len(paths)} shards {paths}; "
                           "concatenate them in that order and pass the result as --weights")
    buf = open(weights_path, "rb").read()
    offset, weights = 0, {}
    for entry in (w for group in manifest for w in group["weights"]):
        shape = [int(d) for d in entry["shape"]]
        count = int(np.prod(shape, dtype=np.int64))
        if entry["dtype"] != "float32":
            raise ConvertError(f"{entry['name']}: unsupported weight dtype {entry['dtype']}")
        quant = entry.get("quantization")
        if quant:
            if quant["dtype"] != "uint8":
                raise ConvertError(f"{entry['name']}: unsupported quantization dtype {quant['dtype']}")
            q = np.frombuffer(buf, np.uint8, count, offset)
            offset += count
            values = (q.astype(np.float64) * float(quant["scale"]) + float(quant["min"])).astype(np.float32)
        else:
            values = np.frombuffer(buf, np.dtype("<f4"), count, offset).astype(np.float32)
            offset += 4 * count
        weights[entry["name"]] = values.reshape(shape)
    if offset != len(buf):
        raise ConvertError(f"weights file has {len(buf)} bytes, the manifest describes {offset}")
    return weights


class Graph:
    def __init__(self, weights):
        self.w = weights
        self.used = set()
        self.nodes, self.inits = [], []

    def weight(self, name, rank):
        if name not in self.w:
            raise ConvertError(f"the weights have no {name}")
        value = self.w[name]
        if value.ndim != rank:
            raise ConvertError(f"{name} has shape {list(value.shape)}, expected rank {rank}")
        self.used.add(name)
        return value

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op, inputs, name, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv_layer(self, x, prefix, size, stride, relu):
        """face-api convLayer: conv2d + bias, scale layer (x * weights + biases), optional ReLU.
        size: the input's height = width; returns (output, output size)."""
        filters = self.weight(prefix + "/conv/filters", 4)           # [kh,kw,in,out]
        bias = self.weight(prefix + "/conv/bias", 1)
        k = filters.shape[0]
        if stride == 1:   # 'same', odd kernel, stride 1: symmetric padding
            pads, out = [k // 2] * 4, size
        else:             # 'valid'
            pads, out = [0] * 4, (size - k) // stride + 1
        y = self.node("Conv", [x, self.const(prefix + "/conv/W", filters.transpose(3, 2, 0, 1)),
                               self.const(prefix + "/conv/B", bias)], prefix + "/conv",
                      kernel_shape=[k, k], strides=[stride, stride], pads=pads)
        channels = filters.shape[3]
        scale = self.weight(prefix + "/scale/weights", 1).reshape(1, channels, 1, 1)
        shift = self.weight(prefix + "/scale/biases", 1).reshape(1, channels, 1, 1)
        y = self.node("Mul", [y, self.const(prefix + "/scale/W", scale)], prefix + "/scale/mul")
        y = self.node("Add", [y, self.const(prefix + "/scale/B", shift)], prefix + "/scale")
        if relu:
            y = self.node("Relu", [y], prefix + "/relu")
        return y, out

    def residual(self, x, prefix, size):
        out, _ = self.conv_layer(x, prefix + "/conv1", size, 1, relu=True)
        out, _ = self.conv_layer(out, prefix + "/conv2", size, 1, relu=False)
        return self.node("Relu", [self.node("Add", [out, x], prefix + "/add")], prefix), size

    def residual_down(self, x, prefix, size, channels_in, channels_out):
        out, out_size = self.conv_layer(x, prefix + "/conv1", size, 2, relu=True)
        out, _ = self.conv_layer(out, prefix + "/conv2", out_size, 1, relu=False)
        pooled = self.node("AveragePool", [x], prefix + "/pool", kernel_shape=[2, 2], strides=[2, 2])
        pooled_size = (size - 2) // 2 + 1
        if channels_out != channels_in:   # tf.concat([pooled, zeros], 3)
            if channels_out != 2 * channels_in:
                raise ConvertError(f"{prefix}: {channels_in} -> {channels_out} channels (face-api doubles them)")
            pooled = self.node("Pad", [pooled, self.const(prefix + "/pool/pads", np.array(
                [0, 0, 0, 0, 0, channels_out - channels_in, 0, 0], np.int64))], prefix + "/pool/widen")
        if out_size != pooled_size:       # a row of zeros at the bottom, a column at the right
            if pooled_size - out_size != 1:
                raise ConvertError(f"{prefix}: output {out_size} vs shortcut {pooled_size}")
            out = self.node("Pad", [out, self.const(prefix + "/pads", np.array(
                [0, 0, 0, 0, 0, 0, 1, 1], np.int64))], prefix + "/adjust")
        return self.node("Relu", [self.node("Add", [pooled, out], prefix + "/add")], prefix), pooled_size


def build(weights):
    g = Graph(weights)
    x = g.node("Transpose", ["input"], "to_nchw", perm=[0, 3, 1, 2])
    x, size = g.conv_layer(x, "conv32_down", SIZE, 2, relu=True)
    x = g.node("MaxPool", [x], "max_pool", kernel_shape=[3, 3], strides=[2, 2])
    size = (size - 3) // 2 + 1
    channels = 32
    for prefix, kind, out_channels in BLOCKS:
        if kind == "residual":
            x, size = g.residual(x, prefix, size)
        else:
            x, size = g.residual_down(x, prefix, size, channels, out_channels)
        channels = out_channels
    x = g.node("ReduceMean", [x], "global_avg", axes=[2, 3], keepdims=0)
    fc = g.weight("fc", 2)
    if fc.shape != (channels, 128):
        raise ConvertError(f"fc has shape {list(fc.shape)}, expected [{channels}, 128]")
    g.node("MatMul", [x, g.const("fc/W", fc)], "descriptor")
    unused = sorted(set(weights) - g.used)
    if unused:
        raise ConvertError(f"weights not used by the network: {unused}")
    graph = helper.make_graph(
        g.nodes, "faceapi_recognition",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["N", 128])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="deepemotion-convert-faceapi-recognition", producer_version="1")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", required=True, help="face_recognition_model-weights_manifest.json")
    ap.add_argument("--weights", required=True, help="face_recognition_model.bin")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    try:
        model = build(load_weights(json.load(open(a.manifest)), a.weights))
    except ConvertError as e:
        raise SystemExit(f"convert_faceapi_recognition.py: {e}")
    with open(a.out, "wb") as f:
        f.write(model.SerializeToString(deterministic=True))


if __name__ == "__main__":
    main()
