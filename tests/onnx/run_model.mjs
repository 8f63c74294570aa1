// Runs an ONNX model with onnxruntime (npm package onnxruntime-node, which
// scripts/setup-onnxruntime.sh installs into build/node_modules).
//
//   node tests/onnx/run_model.mjs MODEL.onnx INPUT DIMS OUT [options]
//     INPUT   raw little-endian tensor for the model's first input
//     DIMS    its shape, comma separated: 128,1,28,28
//     OUT     output 0 is written to OUT, output i > 0 to OUT.i, each
//             converted to raw float32
//   options:
//     --input-type float32|uint8   element type of INPUT (default float32)
//     --threads N                  intra-op threads (default 1)
//     --repeat R                   run R times, report the fastest (bench)
//     --warmup W                   W untimed runs before those (default 0)
//     --times yes|no               also list every timed run's milliseconds
//                                  in time order, as "runs_ms" (default no)
//     --opt disabled|basic|extended|all
//                                  graph optimization level (default all)
// Prints one JSON line: {"outputs":[{"name","type","dims","file"}],"ms":..}
// ("ms": the fastest run; with --times yes, "runs_ms":[..] follows).
// Exit codes: 0 ok, 2 usage, 3 onnxruntime-node not installed, 1 other.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const modDir = process.env.ORT_NODE_MODULES ||
    join(resolve(here, '..', '..'), 'build', 'node_modules');

function usage(msg) {
    process.stderr.write(`run_model: ${msg}\n` +
        'usage: run_model.mjs MODEL INPUT DIMS OUT [--input-type float32|uint8] ' +
        '[--threads N] [--repeat R] [--warmup W] [--times yes|no] ' +
        '[--opt disabled|basic|extended|all]\n');
    process.exit(2);
}

const pos = [];
const opt = { 'input-type': 'float32', threads: '1', repeat: '1', warmup: '0', times: 'no',
    opt: 'all' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith('--')) {
        const k = argv[i].slice(2);
        if (!(k in opt) || i + 1 >= argv.length) usage(`bad option ${argv[i]}`);
        opt[k] = argv[++i];
    } else {
        pos.push(argv[i]);
    }
}
if (pos.length !== 4) usage('expected 4 arguments');
const [modelPath, inputPath, dimsText, outPath] = pos;
const dims = dimsText.split(',').map(Number);
if (dims.some((d) => !Number.isInteger(d) || d < 0)) usage(`bad dims ${dimsText}`);
for (const k of ['threads', 'repeat', 'warmup']) {
    const v = Number(opt[k]);
    if (!Number.isInteger(v) || v < (k === 'repeat' ? 1 : 0)) usage(`bad --${k} ${opt[k]}`);
}
if (opt.times !== 'yes' && opt.times !== 'no') usage(`bad --times ${opt.times}`);

let ort;
try {
    ort = createRequire(join(modDir, 'noop.js'))(join(modDir, 'onnxruntime-node'));
} catch (e) {
    process.stderr.write(`run_model: cannot load onnxruntime-node from ${modDir} ` +
        `(run scripts/setup-onnxruntime.sh): ${e.message}\n`);
    process.exit(3);
}

const raw = readFileSync(inputPath);
const count = dims.reduce((a, b) => a * b, 1);
let data;
if (opt['input-type'] === 'float32') {
    data = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
} else if (opt['input-type'] === 'uint8') {
    data = new Uint8Array(raw);
} else {
    usage(`bad input type ${opt['input-type']}`);
}
if (data.length !== count) usage(`${inputPath} holds ${data.length} elements, dims say ${count}`);

const session = await ort.InferenceSession.create(modelPath, {
    intraOpNumThreads: Number(opt.threads),
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: opt.opt,
});
const feeds = { [session.inputNames[0]]: new ort.Tensor(opt['input-type'], data, dims) };
let results;
let best = Infinity;
const runs = [];
for (let r = 0; r < Number(opt.warmup); r++) await session.run(feeds);
for (let r = 0; r < Number(opt.repeat); r++) {
    const t0 = process.hrtime.bigint();
    results = await session.run(feeds);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    runs.push(ms);
    if (ms < best) best = ms;
}
const outputs = session.outputNames.map((name, i) => {
    const t = results[name];
    const f = Float32Array.from(t.data, (v) => Number(v));
    const file = i === 0 ? outPath : `${outPath}.${i}`;
    writeFileSync(file, Buffer.from(f.buffer, f.byteOffset, f.byteLength));
    return { name, type: t.type, dims: t.dims, file };
});
const report = { outputs, ms: best };
if (opt.times === 'yes') report.runs_ms = runs.map((v) => Math.round(v * 1e4) / 1e4);
process.stdout.write(JSON.stringify(report) + '\n');
