#!/usr/bin/env node
// Runs the built gateway with the environment a chart pod would get, as the
// kubelet would see it: asks /healthz, /readyz and /metrics, then sends
// SIGTERM and times the stop. Used by check-chart.js; prints one JSON line.
//
// Usage: gateway-probe.js BINARY ENV_JSON_FILE PORT STOP_LIMIT_MS
// Only loopback is contacted: the caller points REDIS_URL and NATS_URL at
// closed loopback ports, so the gateway must be alive but not ready.
'use strict';

const fs = require('fs');
const http = require('http');
const { spawn } = require('child_process');

const [bin, envFile, port, stopLimit] = process.argv.slice(2);
const env = JSON.parse(fs.readFileSync(envFile, 'utf8'));
const result = { early_exit: null, healthz: null, readyz: null, metrics: null, stop_ms: null, code: null, signal: null };
let stderr = '';

const child = spawn(bin, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
child.stdout.on('data', (d) => (stderr += d));
child.stderr.on('data', (d) => (stderr += d));
let exited = false;
child.on('exit', (code, signal) => {
  exited = true;
  result.code = code;
  result.signal = signal;
});

const get = (p) =>
  new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: Number(port), path: p, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', () => resolve(null));
    req.on('timeout', () => req.destroy());
  });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function done() {
  result.output_tail = stderr.split('\n').slice(-8).join('\n');
  console.log(JSON.stringify(result));
  process.exit(0);
}

(async () => {
  const t0 = Date.now();
  while (Date.now() - t0 < 5000 && !exited) {
    result.healthz = await get('/healthz');
    if (result.healthz !== null) break;
    await sleep(100);
  }
  if (exited) {
    result.early_exit = true;
    return done();
  }
  result.readyz = await get('/readyz');
  result.metrics = await get('/metrics');
  const t1 = Date.now();
  child.kill('SIGTERM');
  while (!exited && Date.now() - t1 < Number(stopLimit)) await sleep(20);
  if (!exited) {
    child.kill('SIGKILL');
    while (!exited) await sleep(20);
    result.stop_ms = -1;
  } else result.stop_ms = Date.now() - t1;
  done();
})();
