// The live dashboard in a real browser: Debian's headless Chromium, driven by
// playwright-core, loads the page from a running gateway (its own
// redis-server, frames from fb-inject at 500/s, fb-processor processors) and
// checks what an operator sees against the REST API.
//
//   cd tests/browser && npm ci && FB_BIN_DIR=../../build/bin node --test
//
// Screenshots and every process's log go to $FB_TEST_OUTPUT (default
// build/test-output/ in the repository).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  Gateway, Proc, fbBinary, freePort, launchChromium, outputDir, sleep, startRedis, waitFor,
} from './harness.mjs';

const TOKEN = 'browser-test-token';
const INJECT_RATE = 500;
const HEARTBEAT_TIMEOUT_MS = 2000;
const HEARTBEAT_MS = 250;
const BULK = 1000;

let out, redis, gw, inject, alive, dying, browser, context, page;
const pageErrors = [];

const sel = (testid) => `[data-testid="${testid}"]`;

function startProcessor(id) {
  return new Proc(`processor-${id}`, fbBinary('fb-processor'), [
    '--id', id, '--capabilities', 'person,vehicle,face', '--api', gw.base, '--token', TOKEN,
    '--redis-url', redis.url, '--heartbeat-ms', String(HEARTBEAT_MS), '--quiet',
  ], { env: { NATS_URL: 'none' }, logDir: out });
}

/* Everything the page shows that the API also answers, read in one go (one
 * JavaScript task, so all from the same rendered snapshot). */
function readPage() {
  return page.evaluate(() => {
    const v = (id) => {
      const e = document.querySelector(`[data-testid="${id}"]`);
      const s = e && e.getAttribute('data-value');
      return s === null || s === '' || s === undefined ? null : Number(s);
    };
    const procs = {};
    document.querySelectorAll('tr[data-testid^="proc-row-"]').forEach((tr) => {
      const cell = (id) => tr.querySelector(`[data-testid="${id}"]`);
      procs[tr.getAttribute('data-id')] = {
        status: tr.getAttribute('data-status'),
        routed: Number(cell('proc-routed').getAttribute('data-value')),
      };
    });
    return {
      nowMs: Number(document.body.getAttribute('data-now-ms')),
      in: v('frames-in'), out: v('frames-out'),
      consumed: v('frames-consumed'), distributed: v('frames-distributed'),
      lag: v('consumer-lag'), p50: v('latency-p50'), p99: v('latency-p99'),
      procs,
    };
  });
}

async function shot(name, p = page) {
  const file = path.join(out, name);
  await p.screenshot({ path: file, fullPage: true });
  return file;
}

before(async () => {
  out = outputDir();
  // The browser first: a machine without Chromium or playwright-core fails
  // here, at once, saying what to install.
  browser = await launchChromium();
  redis = await startRedis(out);
  gw = new Gateway({
    redis, port: await freePort(), logDir: out,
    env: { HEARTBEAT_TIMEOUT_MS: String(HEARTBEAT_TIMEOUT_MS), ROUTING_STRATEGY: 'least_loaded' },
  });
  await gw.start();
  alive = startProcessor('alive-1');
  dying = startProcessor('dying-1');
  for (const id of ['alive-1', 'dying-1']) {
    await waitFor(async () => (await gw.api('GET', `/api/v1/processors/${id}`)).status === 200,
      { timeout: 10000, what: `${id} to register` });
  }
  inject = new Proc('fb-inject', fbBinary('fb-inject'), [
    '--redis-url', redis.url, '--rate', String(INJECT_RATE), '--frames', '0', '--quiet',
  ], { logDir: out });
  context = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: 'light' });
  page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  await browser?.close().catch(() => {});
  for (const p of [inject, alive, dying]) await p?.stop('SIGTERM').catch(() => {});
  await gw?.stop().catch(() => {});
  await redis?.stop().catch(() => {});
  console.log(`# screenshots and logs: ${out}`);
});

test('the page comes from the gateway and goes live over the WebSocket', { timeout: 30000 }, async () => {
  const resp = await page.goto(gw.base + '/');
  assert.equal(resp.status(), 200);
  for (const asset of ['/app.js', '/style.css']) {
    const r = await fetch(gw.base + asset);
    assert.equal(r.status, 200, `${asset} is served`);
  }
  await page.waitForSelector(`${sel('conn-status')}[data-state="live"]`, { timeout: 10000 });
  assert.equal(await page.locator(sel('conn-banner')).isHidden(), true, 'no disconnect banner while live');
  // Several snapshots a second.
  const n0 = await page.evaluate(() => window.fbDashboard.state.snapshots);
  await sleep(2000);
  const n1 = await page.evaluate(() => window.fbDashboard.state.snapshots);
  assert.ok(n1 - n0 >= 5, `at least 5 snapshots in 2 s (got ${n1 - n0})`);
});

test('the numbers change and agree with /api/v1/stats', { timeout: 60000 }, async (t) => {
  await waitFor(async () => (await readPage()).in > 0, { timeout: 15000, what: 'frames in/s > 0 on the page' });
  const a = await readPage();
  await sleep(1500);
  const b = await readPage();
  assert.ok(b.nowMs > a.nowMs, 'the snapshot time moves');
  assert.ok(b.consumed > a.consumed, `frames consumed grows on the page (${a.consumed} → ${b.consumed})`);
  assert.ok(b.distributed > a.distributed, 'frames distributed grows on the page');

  for (let round = 0; round < 3; round++) {
    const pg = await readPage();
    const api = await gw.get('/api/v1/stats');
    // Both times are the gateway's own clock: dt is exactly how much later
    // the API's numbers are than the page's.
    const dt = (api.now_ms - pg.nowMs) / 1000;
    assert.ok(dt >= 0 && dt < 5, `the page's snapshot is at most 5 s older than the API's (dt=${dt})`);
    const rate = Math.max(api.frames.in_per_s, pg.in, INJECT_RATE);
    // Counters can only have grown by what arrived in dt (+50% for bursts)
    // plus one batch read at once.
    const grow = Math.ceil(rate * dt * 1.5) + api.routing.batch_size;
    t.diagnostic(`round ${round}: dt=${dt.toFixed(3)} s, allowed growth ${grow}; ` +
      `consumed page=${pg.consumed} api=${api.frames.consumed}; in page=${pg.in} api=${api.frames.in_per_s}`);
    for (const [name, p, q] of [
      ['consumed', pg.consumed, api.frames.consumed],
      ['distributed', pg.distributed, api.frames.distributed],
    ]) {
      assert.ok(q - p >= 0 && q - p <= grow, `${name}: page ${p}, API ${q} ${dt.toFixed(3)} s later (allowed 0..${grow})`);
    }
    // Rates are per-second figures: in dt they can move by the whole rate
    // per second of dt, plus 20% of it for the second's granularity.
    const rateTol = rate * (0.2 + dt);
    assert.ok(Math.abs(pg.in - api.frames.in_per_s) <= rateTol, `in/s: page ${pg.in}, API ${api.frames.in_per_s} (±${rateTol})`);
    assert.ok(Math.abs(pg.out - api.frames.out_per_s) <= rateTol, `out/s: page ${pg.out}, API ${api.frames.out_per_s} (±${rateTol})`);
    assert.ok(Math.abs(pg.lag - api.frames.consumer_lag) <= grow, `consumer lag: page ${pg.lag}, API ${api.frames.consumer_lag}`);
    // Latency quantiles come from one cumulative histogram: the same within a factor of 2.
    for (const q of ['p50', 'p99']) {
      const x = pg[q], y = api.routing_latency_ms[q];
      assert.ok(x > 0 && y > 0 && x <= 2 * y && y <= 2 * x, `latency ${q}: page ${x} ms, API ${y} ms`);
    }
    assert.ok(pg.p99 >= pg.p50, 'p99 ≥ p50');
    for (const p of api.processors) {
      const shown = pg.procs[p.id];
      assert.ok(shown, `processor ${p.id} is in the table`);
      assert.equal(shown.status, p.status, `${p.id}'s status`);
      assert.ok(p.frames_routed - shown.routed >= 0 && p.frames_routed - shown.routed <= grow,
        `${p.id} frames routed: page ${shown.routed}, API ${p.frames_routed}`);
    }
    // The KPIs say in words what the numbers say.
    const text = await page.locator(sel('frames-in')).textContent();
    assert.match(text, /^[\d,.]+$/, `frames in reads as a number: ${text}`);
    await sleep(700);
  }
  await shot('dashboard-light.png');
});

test('a processor that dies turns dead on the page within 2 s of the gateway deciding so', { timeout: 60000 }, async (t) => {
  for (const id of ['alive-1', 'dying-1']) {
    await page.waitForSelector(`${sel('proc-row-' + id)}[data-status="healthy"]`, { timeout: 10000 });
  }
  // The page notes, by the machine's clock, the moment the row turns dead.
  await page.evaluate(() => {
    window.__deadSeenAt = 0;
    const check = () => {
      const r = document.querySelector('[data-testid="proc-row-dying-1"]');
      if (!window.__deadSeenAt && r && r.getAttribute('data-status') === 'dead') window.__deadSeenAt = Date.now();
    };
    new MutationObserver(check).observe(document.body,
      { subtree: true, childList: true, attributes: true, attributeFilter: ['data-status'] });
  });
  // SIGKILL: no 'stopping' heartbeat; the gateway notices only the silence.
  await dying.stop('SIGKILL');
  const killedAt = Date.now();
  const apiDeadAt = await waitFor(async () => {
    const r = await gw.api('GET', '/api/v1/processors/dying-1');
    return r.json && r.json.status === 'dead' ? Date.now() : 0;
  }, { timeout: HEARTBEAT_TIMEOUT_MS + 20000, interval: 25, what: 'the API to report dying-1 dead' });
  const pageDeadAt = await waitFor(() => page.evaluate(() => window.__deadSeenAt),
    { timeout: 5000, what: 'dying-1 to show dead on the page' });
  // When the gateway decided: the health event's own time stamp.
  const decidedAt = await page.evaluate(() => {
    const e = window.fbDashboard.state.events.find((x) => x.event === 'health' && x.processor_id === 'dying-1' && x.status === 'dead');
    return e ? e.at : null;
  });
  t.diagnostic(`killed → dead in the API: ${apiDeadAt - killedAt} ms; the gateway decided at kill+${decidedAt - killedAt} ms; ` +
    `the page showed it ${pageDeadAt - decidedAt} ms after the decision, ${pageDeadAt - apiDeadAt} ms after the API poll saw it`);
  assert.ok(decidedAt, 'a health event for dying-1 → dead reached the page');
  assert.ok(pageDeadAt - decidedAt <= 2000, `the page showed dead ${pageDeadAt - decidedAt} ms after the gateway decided (at most 2000)`);
  assert.ok(pageDeadAt - apiDeadAt <= 2000, `the page showed dead ${pageDeadAt - apiDeadAt} ms after the API did (at most 2000)`);
  // The event log says so, and the other processor is untouched.
  await page.waitForSelector(`${sel('event')}[data-event="health"][data-processor="dying-1"][data-status="dead"]`,
    { state: 'attached', timeout: 2000 });
  assert.equal(await page.getAttribute(sel('proc-row-alive-1'), 'data-status'), 'healthy');
  await waitFor(async () => (await page.textContent(sel('count-dead'))) === '1', { timeout: 2000, what: 'dead count 1' });
});

test('changing the strategy on the page changes GET /api/v1/routing', { timeout: 30000 }, async () => {
  assert.equal(await page.locator('#token-row').isHidden(), true, 'no token field while the gateway needs none');
  const before = (await gw.get('/api/v1/routing')).strategy;
  const target = before === 'round_robin' ? 'consistent_hash' : 'round_robin';
  // The select offers what the gateway accepts.
  const options = await page.$$eval(`${sel('strategy-select')} option`, (os) => os.map((o) => o.value));
  assert.deepEqual([...options].sort(), (await gw.get('/api/v1/routing')).strategies.slice().sort());
  await page.selectOption(sel('strategy-select'), target);
  await page.click(sel('strategy-apply'));
  await page.waitForFunction((t) => document.querySelector('[data-testid="strategy-msg"]').textContent.includes(`now ${t}`),
    target, { timeout: 5000 });
  assert.equal((await gw.get('/api/v1/routing')).strategy, target);
  // Pushed back to the page: the snapshot and the strategy event.
  await page.waitForFunction((t) => document.querySelector('[data-testid="strategy-current"]').textContent === t,
    target, { timeout: 3000 });
  await page.waitForSelector(`${sel('event')}[data-event="strategy"][data-status="${target}"]`, { state: 'attached', timeout: 3000 });
  assert.equal(await page.getAttribute(sel('strategy-apply'), 'disabled'), '', 'nothing left to apply');
});

test('dark theme: the toggle switches, is remembered, and the phone layout works', { timeout: 60000 }, async () => {
  assert.equal(await page.evaluate(() => document.documentElement.getAttribute('data-resolved-theme')), 'light');
  await page.click(sel('theme-toggle'));
  assert.equal(await page.evaluate(() => document.documentElement.getAttribute('data-theme')), 'dark');
  const bg = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const dark = await bg();
  await page.reload();
  await page.waitForSelector(`${sel('conn-status')}[data-state="live"]`, { timeout: 10000 });
  assert.equal(await page.evaluate(() => document.documentElement.getAttribute('data-theme')), 'dark', 'remembered across a reload');
  assert.equal(await bg(), dark);
  await sleep(1500); // a few snapshots on the chart
  await shot('dashboard-dark.png');
  await page.click(sel('theme-toggle'));
  assert.notEqual(await bg(), dark, 'back to light');

  // A phone: 390 px wide, following the system's dark scheme.
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, colorScheme: 'dark', isMobile: true, hasTouch: true });
  const pp = await phone.newPage();
  pp.on('pageerror', (e) => pageErrors.push(e.message));
  await pp.goto(gw.base + '/');
  await pp.waitForSelector(`${sel('conn-status')}[data-state="live"]`, { timeout: 10000 });
  await sleep(1000);
  const overflow = await pp.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `no sideways scrolling on a phone (${overflow} px too wide)`);
  assert.ok(await pp.locator(sel('proc-row-alive-1')).isVisible(), 'the processor table shows on a phone');
  await shot('dashboard-phone.png', pp);
  await phone.close();
});

test('the disconnect banner shows when the gateway stops and goes when it is back', { timeout: 60000 }, async (t) => {
  await gw.stop();
  await page.waitForSelector(sel('conn-banner'), { state: 'visible', timeout: 8000 });
  const text = await page.textContent(sel('conn-banner'));
  assert.match(text, /Connection to the gateway lost — reconnecting in \d+ s/);
  assert.equal(await page.getAttribute(sel('conn-status'), 'data-state'), 'disconnected');
  assert.match(await page.title(), /^Disconnected/, 'the tab title says so too');
  await shot('dashboard-disconnected.png');
  await sleep(1500);
  // Back, now with an API token (the next test needs it).
  await gw.start({ API_TOKEN: TOKEN });
  const upAt = Date.now();
  await page.waitForSelector(sel('conn-banner'), { state: 'hidden', timeout: 20000 });
  await page.waitForSelector(`${sel('conn-status')}[data-state="live"]`, { timeout: 5000 });
  t.diagnostic(`reconnected ${Date.now() - upAt} ms after the gateway was ready again`);
  // The events from before the restart are still in the log, below the new ones.
  await page.waitForSelector(`${sel('event')}[data-event="strategy"]`, { state: 'attached', timeout: 2000 });
  // Live again: the numbers move.
  const a = (await readPage()).nowMs;
  await waitFor(async () => (await readPage()).nowMs > a, { timeout: 3000, what: 'a new snapshot after the reconnect' });
});

test('with API_TOKEN set the page asks for the token and shows the 401 and 422 details', { timeout: 30000 }, async () => {
  await page.waitForSelector('#token-row', { state: 'visible', timeout: 5000 });
  await page.fill(sel('api-token'), '');
  const before = (await gw.get('/api/v1/routing')).strategy;
  const target = before === 'weighted_round_robin' ? 'least_loaded' : 'weighted_round_robin';
  const expected = (await gw.api('PUT', '/api/v1/routing', { strategy: target })).json.detail;
  await page.selectOption(sel('strategy-select'), target);
  await page.click(sel('strategy-apply'));
  await page.waitForFunction(() => /^401: /.test(document.querySelector('[data-testid="strategy-msg"]').textContent), null, { timeout: 5000 });
  assert.equal(await page.textContent(sel('strategy-msg')), `401: ${expected}`);
  assert.equal((await gw.get('/api/v1/routing')).strategy, before, 'nothing changed without the token');

  // 422: the page only offers what the gateway accepts, so the request is
  // rewritten on its way out; the gateway's own answer comes back to the page.
  await page.fill(sel('api-token'), TOKEN);
  await page.route('**/api/v1/routing', (route) => route.continue({ postData: JSON.stringify({ strategy: 'fastest_please' }) }));
  await page.click(sel('strategy-apply'));
  await page.waitForFunction(() => /^422: /.test(document.querySelector('[data-testid="strategy-msg"]').textContent), null, { timeout: 5000 });
  await page.unroute('**/api/v1/routing');
  const detail422 = (await gw.api('PUT', '/api/v1/routing', { strategy: 'fastest_please' }, TOKEN)).json.detail;
  assert.equal(await page.textContent(sel('strategy-msg')), `422: ${detail422}`);
  assert.equal((await gw.get('/api/v1/routing')).strategy, before, 'a refused change changes nothing');

  await page.selectOption(sel('strategy-select'), target);
  await page.click(sel('strategy-apply'));
  await waitFor(async () => (await gw.get('/api/v1/routing')).strategy === target, { timeout: 5000, what: `strategy ${target} with the token` });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('fb-api-token')), TOKEN, 'the token is kept for the tab');
});

test(`${BULK} processors: the table stays small in the DOM, sorts and filters`, { timeout: 120000 }, async (t) => {
  const ids = Array.from({ length: BULK }, (_, i) => `bulk-${String(i).padStart(4, '0')}`);
  for (let i = 0; i < ids.length; i += 25) {
    await Promise.all(ids.slice(i, i + 25).map(async (id) => {
      const r = await gw.api('POST', '/api/v1/processors/register',
        { id, capabilities: ['bulk'], capacity: 1, queue: '', heartbeat_interval_ms: 0 }, TOKEN);
      assert.equal(r.status, 201, `register ${id}: ${r.text}`);
    }));
  }
  await page.waitForFunction((n) => window.fbDashboard.state.procs.length >= n, BULK + 2, { timeout: 20000 });
  // The page's own timings while 1,000 rows update four times a second:
  // handling one snapshot (parse included) and one render. Medians, since
  // a busy CI machine can preempt any single one; long tasks are reported.
  await page.evaluate(() => {
    window.__long = [];
    new PerformanceObserver((l) => l.getEntries().forEach((e) => window.__long.push(e.duration)))
      .observe({ type: 'longtask', buffered: false });
    window.fbDashboard.state.perf.message.length = 0;
    window.fbDashboard.state.perf.render.length = 0;
  });
  const n0 = await page.evaluate(() => window.fbDashboard.state.snapshots);
  await sleep(3000);
  const n1 = await page.evaluate(() => window.fbDashboard.state.snapshots);
  const perf = await page.evaluate(() => {
    const med = (a) => { const b = [...a].sort((x, y) => x - y); return b.length ? b[b.length >> 1] : 0; };
    const { message, render } = window.fbDashboard.state.perf;
    return { message: med(message), render: med(render), maxMessage: Math.max(0, ...message),
      maxRender: Math.max(0, ...render), longest: Math.max(0, ...window.__long) };
  });
  const f = (x) => x.toFixed(1);
  t.diagnostic(`with ${BULK + 2} processors: ${n1 - n0} snapshots in 3 s; per snapshot median ${f(perf.message)} ms ` +
    `(max ${f(perf.maxMessage)}), per render median ${f(perf.render)} ms (max ${f(perf.maxRender)}), longest task ${f(perf.longest)} ms`);
  assert.ok(n1 - n0 >= 6, `snapshots keep coming with ${BULK} processors (${n1 - n0} in 3 s)`);
  assert.ok(perf.message < 50, `handling a snapshot takes ${f(perf.message)} ms (median; at most 50)`);
  assert.ok(perf.render < 50, `a render takes ${f(perf.render)} ms (median; at most 50)`);

  const rows = () => page.$$eval('tr[data-testid^="proc-row-"]', (rs) => rs.map((r) => [r.getAttribute('data-id'), r.getAttribute('data-status')]));
  const inDom = await rows();
  assert.ok(inDom.length > 5 && inDom.length <= 80, `only the visible rows are in the DOM (${inDom.length})`);
  assert.match(await page.textContent(sel('proc-summary')), /1,002/);

  // Text filter.
  await page.fill(sel('proc-filter'), 'bulk-0777');
  await waitFor(async () => { const r = await rows(); return r.length === 1 && r[0][0] === 'bulk-0777'; },
    { timeout: 3000, what: 'the filter to leave bulk-0777 alone' });
  await page.fill(sel('proc-filter'), '');
  // Status filter.
  await page.click(`${sel('status-filter')} button[data-status="dead"]`);
  await waitFor(async () => { const r = await rows(); return r.length >= 1 && r.every(([, s]) => s === 'dead') && r.some(([id]) => id === 'dying-1'); },
    { timeout: 3000, what: 'the dead filter to show only dead processors' });
  await page.click(`${sel('status-filter')} button[data-status=""]`);
  // Sorting: frames/s, largest first, puts the one working processor on top.
  await page.click('th[data-key="rate"] button');
  await waitFor(async () => (await rows())[0]?.[0] === 'alive-1', { timeout: 3000, what: 'alive-1 first by frames/s' });
  assert.equal(await page.getAttribute('th[data-key="rate"]', 'aria-sort'), 'descending');
  // By id, descending, then scrolled to the end: the virtual list reaches the last row.
  await page.click('th[data-key="id"] button');
  await page.click('th[data-key="id"] button');
  await waitFor(async () => (await rows())[0]?.[0] === 'dying-1', { timeout: 3000, what: 'dying-1 first by id descending' });
  await page.evaluate(() => { const s = document.getElementById('proc-scroll'); s.scrollTop = s.scrollHeight; });
  await waitFor(async () => (await rows()).some(([id]) => id === 'alive-1'), { timeout: 3000, what: 'the last row after scrolling down' });
  await page.evaluate(() => { document.getElementById('proc-scroll').scrollTop = 0; });
  await page.click('th[data-key="id"] button');
  await sleep(500);
  await shot('dashboard-1000.png');
});

test('no JavaScript errors on the page', () => {
  assert.deepEqual(pageErrors, []);
});
