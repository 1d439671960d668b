// Reference run of the ORIGINAL face-api.js FaceRecognitionNet - @vladmandic/face-api's own code
// (dist/face-api.node-wasm.js: the node build that needs no tfjs-node) loading the npm package's
// weights from disk - on TensorFlow.js's WebAssembly backend (@tensorflow/tfjs-backend-wasm: its
// .wasm files ship in the npm package, nothing is downloaded at install or run time; about 10x the
// pure-JavaScript CPU backend, which agrees with it to within 4e-7), for
// tests/python/test_faceapi_recognition_converter.py.
//
// The packages (face-api, tfjs, tfjs-backend-wasm; pinned) live in ./tfjs-reference:
//   (cd tests/python/tfjs-reference && npm ci)      -- the test does this when node_modules is missing
// Usage:
//   node tests/python/faceapi_recognition_reference.mjs MODEL_DIR INPUT.u8 N OUTPUT.f32
// MODEL_DIR: holds face_recognition_model-weights_manifest.json and the weights file it names
// (face_recognition_model.bin), as in the package's model/ folder; loaded with net.loadFromDisk.
// INPUT.u8: N aligned face crops, uint8 RGB [N,150,150,3]; they go through face-api's own input path
// (net.forward on a batch of tf.Tensor3D: toBatchTensor, normalize with its mean RGB, / 255).
// OUTPUT.f32 gets the descriptors (float32 little-endian [N,128]).
// Prints one JSON line {"n","dims","backend","tfjs","faceapi"} on stdout.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(new URL('./tfjs-reference/package.json', import.meta.url));
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');
const { tf } = faceapi;

const [modelDir, inputPath, nArg, outputPath] = process.argv.slice(2);
if (!outputPath) {
  console.error('usage: faceapi_recognition_reference.mjs MODEL_DIR INPUT.u8 N OUTPUT.f32');
  process.exit(2);
}

// the wasm backend face-api's node-wasm build registers (TFJS_BACKEND=cpu: the pure-JS one)
await tf.setBackend(process.env.TFJS_BACKEND || 'wasm');
await tf.ready();
if (tf.getBackend() === 'cpu') tf.backend().firstUse = false; // no "install tfjs-node" banner

const net = new faceapi.FaceRecognitionNet();
await net.loadFromDisk(modelDir);

const n = Number(nArg);
const side = 150;
const per = side * side * 3;
const input = readFileSync(inputPath);
if (input.length !== n * per) {
  console.error(`input has ${input.length} bytes, expected ${n} x ${side}x${side}x3`);
  process.exit(2);
}

const out = new Float32Array(n * 128);
const batch = 8;
for (let start = 0; start < n; start += batch) {
  const count = Math.min(batch, n - start);
  const crops = [];
  for (let i = start; i < start + count; i += 1) {
    crops.push(tf.tensor3d(new Int32Array(input.subarray(i * per, (i + 1) * per)), [side, side, 3], 'int32'));
  }
  const y = await net.forward(crops);
  if (y.shape[0] !== count || y.shape[1] !== 128) {
    console.error(`face-api returned shape ${y.shape}`);
    process.exit(1);
  }
  out.set(await y.data(), start * 128);
  tf.dispose([y, ...crops]);
}
writeFileSync(outputPath, Buffer.from(out.buffer));
console.log(JSON.stringify({ n, dims: 128, backend: tf.getBackend(), tfjs: tf.version_core, faceapi: faceapi.version }));
