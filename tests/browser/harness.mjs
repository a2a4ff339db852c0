// Browser test harness: real redis-server, frame-buffer, fb-inject and
// fb-processor processes on free loopback ports, and Debian's Chromium driven
// by playwright-core. Anything missing FAILS with a message saying how to get
// it; nothing is skipped.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '../..');

export const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

export function outputDir() {
  const d = process.env.FB_TEST_OUTPUT || path.join(REPO, 'build', 'test-output');
  fs.mkdirSync(d, { recursive: true });
  return path.resolve(d);
}

export function binDir() {
  const d = process.env.FB_BIN_DIR || 'build/bin';
  return path.isAbsolute(d) ? d : path.join(REPO, d);
}

export function fbBinary(name) {
  const p = path.join(binDir(), name);
  try {
    fs.accessSync(p, fs.constants.X_OK);
  } catch {
    throw new Error(`${name} not found at ${p}: build the project (cmake --build build) and point ` +
      'FB_BIN_DIR at its bin/ directory (ctest sets it)');
  }
  return p;
}

export function systemBinary(name, hint) {
  const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  const p = r.status === 0 ? r.stdout.trim() : '';
  if (!p) throw new Error(`${name} is not installed (not on PATH): ${hint}`);
  return p;
}

/* playwright-core from tests/browser/node_modules, or a clear failure. */
export async function loadPlaywright() {
  try {
    return await import('playwright-core');
  } catch (e) {
    throw new Error('playwright-core is not installed: run `npm ci` in tests/browser ' +
      `(it needs only the npm registry) — ${e.message}`);
  }
}

export async function launchChromium() {
  const exe = systemBinary('chromium', 'install Debian\'s browser with `apt-get install -y chromium`');
  const { chromium } = await loadPlaywright();
  return chromium.launch({ executablePath: exe, headless: true, args: CHROMIUM_FLAGS, timeout: 60000 });
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* Polls fn() until it returns something truthy; returns it. */
export async function waitFor(fn, { timeout = 10000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}` + (last ? `: ${last.message}` : ''));
    }
    await sleep(interval);
  }
}

// ------------------------------------------------------------- processes

const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* gone */ }
  }
});

export class Proc {
  constructor(name, cmd, args, { env = {}, logDir } = {}) {
    this.name = name;
    this.logPath = path.join(logDir, `${name}.log`);
    const log = fs.openSync(this.logPath, 'a');
    fs.writeSync(log, `\n==== ${new Date().toISOString()} ${cmd} ${args.join(' ')}\n`);
    this.child = spawn(cmd, args, {
      env: { ...process.env, ...env },
      stdio: ['ignore', log, log],
    });
    fs.closeSync(log);
    children.add(this.child);
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        children.delete(this.child);
        this.exitCode = code;
        this.exitSignal = signal;
        resolve({ code, signal });
      });
    });
  }

  get pid() { return this.child.pid; }
  get running() { return this.exitCode === undefined && this.exitSignal === undefined; }

  async stop(signal = 'SIGTERM', timeout = 10000) {
    if (!this.running) return;
    this.child.kill(signal);
    const t = setTimeout(() => { if (this.running) this.child.kill('SIGKILL'); }, timeout);
    await this.exited;
    clearTimeout(t);
  }

  tail(lines = 40) {
    try {
      return fs.readFileSync(this.logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }
}

/* A minimal RESP round trip: PING → +PONG. */
export function redisPing(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    const done = (v) => { s.destroy(); resolve(v); };
    s.setTimeout(1000, () => done(false));
    s.on('error', () => done(false));
    s.on('connect', () => s.write('*1\r\n$4\r\nPING\r\n'));
    s.on('data', (d) => { buf += d; if (buf.includes('\r\n')) done(buf.startsWith('+PONG')); });
  });
}

export async function startRedis(logDir) {
  const exe = systemBinary('redis-server', 'apt-get install -y redis-server');
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-browser-redis-'));
  const p = new Proc('redis', exe, ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--dir', dir, '--protected-mode', 'no'], { logDir });
  p.port = port;
  p.url = `redis://127.0.0.1:${port}/0`;
  await waitFor(async () => {
    if (!p.running) throw new Error(`redis-server exited:\n${p.tail()}`);
    return redisPing(port);
  }, { timeout: 10000, what: 'redis-server to answer PING' });
  const stop = p.stop.bind(p);
  p.stop = async (...a) => { await stop(...a); fs.rmSync(dir, { recursive: true, force: true }); };
  return p;
}

/* One frame-buffer replica. Several on one redis-server (each with its own
 * consumer name and port) make a fleet. */
export class Gateway {
  constructor({ redis, port, consumer = 'browser-test', env = {}, logDir }) {
    this.redis = redis;
    this.port = port;
    this.consumer = consumer;
    this.env = env;
    this.logDir = logDir;
    this.base = `http://127.0.0.1:${port}`;
    this.starts = 0;
  }

  async start(extraEnv = {}) {
    const env = {
      REDIS_URL: this.redis.url,
      NATS_URL: 'none',
      LOG_LEVEL: 'info',
      ...this.env,
      ...extraEnv,
      CONSUMER_NAME: this.consumer,
    };
    this.starts++;
    this.proc = new Proc(`gateway-${this.consumer}`, fbBinary('frame-buffer'), ['--listen', `127.0.0.1:${this.port}`],
      { env, logDir: this.logDir });
    await waitFor(async () => {
      if (!this.proc.running) throw new Error(`frame-buffer exited (${this.proc.exitCode ?? this.proc.exitSignal}):\n${this.proc.tail()}`);
      const r = await fetch(`${this.base}/readyz`).catch(() => null);
      return r && r.status === 200;
    }, { timeout: 15000, what: 'the gateway to be ready (/readyz 200)' });
    return this;
  }

  async stop() { if (this.proc) await this.proc.stop('SIGTERM'); }

  async api(method, p, body, token, extraHeaders = {}) {
    const headers = { ...extraHeaders };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    const r = await fetch(this.base + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: r.status, json, text };
  }

  async get(p) {
    const r = await this.api('GET', p);
    if (r.status !== 200) throw new Error(`GET ${p}: ${r.status} ${r.text}`);
    return r.json;
  }
}
