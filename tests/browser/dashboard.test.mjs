// The live dashboard in a real browser: Debian's headless Chromium, driven by
// playwright-core, loads the page from a running gateway and checks what an
// operator sees against the REST API. The gateway is a fleet of two replicas
// (gw-a, which serves the page, and gw-b) on one redis-server, with frames
// from fb-inject at 500/s and fb-processor processors.
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
const A = 'gw-a'; // serves the page
const B = 'gw-b';
// gw-b joins once gw-a has consumed this many frames, so that the two
// replicas' counters are far apart (a page showing one for the other fails).
const LEAD = 2500;

let out, redis, gw, gwB, inject, alive, dying, browser, context, page;
const pageErrors = [];

const sel = (testid) => `[data-testid="${testid}"]`;

function startProcessor(id) {
  return new Proc(`processor-${id}`, fbBinary('fb-processor'), [
    '--id', id, '--capabilities', 'person,vehicle,face', '--api', gw.base, '--token', TOKEN,
    '--redis-url', redis.url, '--heartbeat-ms', String(HEARTBEAT_MS), '--quiet',
  ], { env: { NATS_URL: 'none' }, logDir: out });
}

/* Everything the page shows that the API also answers, read in one go (one
 * JavaScript task, so all from the same rendered snapshot). `asOf` is the
 * gateway time the KPIs are from (the fleet's figures are each replica's
 * last published ones), `scope` the replica they are for ('' = the fleet). */
function readPage(p = page) {
  return p.evaluate(() => {
    const num = (e) => {
      const s = e && e.getAttribute('data-value');
      return s === null || s === '' || s === undefined ? null : Number(s);
    };
    const v = (id) => num(document.querySelector(`[data-testid="${id}"]`));
    const procs = {};
    document.querySelectorAll('tr[data-testid^="proc-row-"]').forEach((tr) => {
      const cell = (id) => tr.querySelector(`[data-testid="${id}"]`);
      procs[tr.getAttribute('data-id')] = {
        status: tr.getAttribute('data-status'),
        routed: Number(cell('proc-routed').getAttribute('data-value')),
        rate: Number(cell('proc-rate').getAttribute('data-value')),
      };
    });
    const replicas = {};
    document.querySelectorAll('tr[data-testid="replica-row"]').forEach((tr) => {
      const c = (id) => num(tr.querySelector(`[data-testid="${id}"]`));
      replicas[tr.getAttribute('data-consumer')] = {
        self: tr.getAttribute('data-self') === 'true',
        selected: tr.getAttribute('aria-selected') === 'true',
        version: tr.querySelector('[data-testid="replica-version"]').textContent,
        uptime: c('replica-uptime'), in: c('replica-in'), out: c('replica-out'),
        consumed: c('replica-consumed'), p99: c('replica-p99'), lastSeen: c('replica-seen'),
        conns: Object.fromEntries([...tr.querySelectorAll('.cb')].map((b) => [b.getAttribute('data-conn'), b.getAttribute('data-up')])),
      };
    });
    const kpis = document.querySelector('[data-testid="kpis"]');
    const asOf = kpis.getAttribute('data-as-of');
    return {
      nowMs: Number(document.body.getAttribute('data-now-ms')),
      scope: kpis.getAttribute('data-scope'), scopeKind: kpis.getAttribute('data-scope-kind'),
      asOf: asOf ? Number(asOf) : null,
      in: v('frames-in'), out: v('frames-out'),
      consumed: v('frames-consumed'), distributed: v('frames-distributed'),
      lag: v('consumer-lag'), p50: v('latency-p50'), p99: v('latency-p99'),
      dropped: v('dropped-total'), dlq: v('dlq-total'), replicaCount: v('replica-count'),
      procs, replicas,
    };
  });
}

const total = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);

/* The fleet's event log lines matching `css` (attributes on li[data-testid=event]). */
const events = (css = '', p = page) => p.locator(`${sel('event')}${css}`);

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
  const env = { HEARTBEAT_TIMEOUT_MS: String(HEARTBEAT_TIMEOUT_MS), ROUTING_STRATEGY: 'least_loaded' };
  gw = new Gateway({ redis, port: await freePort(), consumer: A, logDir: out, env });
  gwB = new Gateway({ redis, port: await freePort(), consumer: B, logDir: out, env });
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
  await waitFor(async () => (await gw.get('/api/v1/stats')).frames.consumed >= LEAD,
    { timeout: 30000, interval: 200, what: `${A} to consume ${LEAD} frames before ${B} joins` });
  await gwB.start();
  for (const g of [gw, gwB]) {
    await waitFor(async () => (await g.get('/api/v1/replicas')).length === 2,
      { timeout: 10000, what: `${g.consumer} to see both replicas` });
  }
  context = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: 'light' });
  page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  await browser?.close().catch(() => {});
  for (const p of [inject, alive, dying]) await p?.stop('SIGTERM').catch(() => {});
  await gw?.stop().catch(() => {});
  await gwB?.stop().catch(() => {});
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
  // The header names this replica and says how many are live.
  assert.equal(await page.textContent(sel('consumer')), A);
  await page.waitForFunction(() => document.querySelector('[data-testid="replica-count"]').textContent === '2 replicas',
    null, { timeout: 5000 });
  assert.equal(await page.locator(sel('replica-count')).isVisible(), true);
});

test('the page shows the fleet: the sum of both replicas, agreeing with each one\'s /api/v1/stats', { timeout: 60000 }, async (t) => {
  await waitFor(async () => {
    const pg = await readPage();
    return pg.in > 0 && pg.replicas[A]?.in > 0 && pg.replicas[B]?.in > 0;
  }, { timeout: 15000, what: 'frames in/s > 0 on the page, for both replicas' });
  const a = await readPage();
  await sleep(2000); // the fleet's figures are refreshed once a second
  const b = await readPage();
  assert.equal(b.scope, '', 'the fleet by default');
  assert.equal(b.scopeKind, 'fleet');
  assert.ok(b.nowMs > a.nowMs, 'the snapshot time moves');
  assert.ok(b.asOf > a.asOf, 'the fleet\'s figures are refreshed');
  assert.ok(b.consumed > a.consumed, `frames consumed grows on the page (${a.consumed} → ${b.consumed})`);
  assert.ok(b.distributed > a.distributed, 'frames distributed grows on the page');

  for (let round = 0; round < 3; round++) {
    const pg = await readPage();
    const [apiA, apiB] = await Promise.all([gw.get('/api/v1/stats'), gwB.get('/api/v1/stats')]);
    const apis = { [A]: apiA, [B]: apiB };
    const batch = apiA.routing.batch_size;
    assert.equal(pg.replicaCount, 2, 'two live replicas');
    assert.deepEqual(Object.keys(pg.replicas).sort(), [A, B], 'both replicas are in the table');
    // The KPIs are the sum of the replica rows (one snapshot)...
    for (const k of ['in', 'out', 'consumed']) {
      assert.equal(pg[k], pg.replicas[A][k] + pg.replicas[B][k], `fleet ${k} = ${A} + ${B} on the page`);
    }
    assert.equal(pg.asOf, Math.min(pg.replicas[A].lastSeen, pg.replicas[B].lastSeen), 'the fleet is as old as its oldest figures');
    // ...and each row is that replica's own figures, a moment older than its
    // API's: a counter can only have grown by what arrived meanwhile (+50%
    // for bursts) plus one batch read at once.
    for (const name of [A, B]) {
      const row = pg.replicas[name], api = apis[name];
      const dt = (api.now_ms - row.lastSeen) / 1000;
      assert.ok(dt >= 0 && dt < 5, `${name}'s row is at most 5 s older than its API (dt=${dt})`);
      const rate = Math.max(api.frames.in_per_s, row.in, INJECT_RATE / 2);
      const grow = Math.ceil(rate * dt * 1.5) + batch;
      const d = api.frames.consumed - row.consumed;
      assert.ok(d >= 0 && d <= grow, `${name} consumed: row ${row.consumed}, its API ${api.frames.consumed} ${dt.toFixed(3)} s later (allowed 0..${grow})`);
      assert.ok(Math.abs(row.in - api.frames.in_per_s) <= rate * (0.2 + dt), `${name} in/s: row ${row.in}, its API ${api.frames.in_per_s}`);
    }
    // The fleet figures against the two APIs' sums. Both times are the
    // gateways' own clocks (one machine): dt is how much later the APIs'
    // numbers are than the page's oldest.
    const dt = (Math.max(apiA.now_ms, apiB.now_ms) - pg.asOf) / 1000;
    assert.ok(dt >= 0 && dt < 5, `the page's fleet figures are at most 5 s older than the APIs' (dt=${dt})`);
    const sum = (f) => apiA.frames[f] + apiB.frames[f];
    const rate = Math.max(sum('in_per_s'), pg.in, INJECT_RATE);
    const grow = Math.ceil(rate * dt * 1.5) + 2 * batch;
    t.diagnostic(`round ${round}: dt=${dt.toFixed(3)} s, allowed growth ${grow}; in page=${pg.in} ` +
      `API ${A}+${B}=${apiA.frames.in_per_s}+${apiB.frames.in_per_s}; consumed page=${pg.consumed} APIs=${sum('consumed')}`);
    for (const [name, p, q] of [
      ['consumed', pg.consumed, sum('consumed')],
      ['distributed', pg.distributed, sum('distributed')],
    ]) {
      assert.ok(q - p >= 0 && q - p <= grow, `fleet ${name}: page ${p}, ${A}+${B} APIs ${q} ${dt.toFixed(3)} s later (allowed 0..${grow})`);
    }
    // Rates are per-second figures: in dt they can move by the whole rate
    // per second of dt, plus 20% of it for the second's granularity.
    const rateTol = rate * (0.2 + dt);
    assert.ok(Math.abs(pg.in - sum('in_per_s')) <= rateTol, `fleet in/s: page ${pg.in}, ${A}+${B} APIs ${sum('in_per_s')} (±${rateTol})`);
    assert.ok(Math.abs(pg.out - sum('out_per_s')) <= rateTol, `fleet out/s: page ${pg.out}, ${A}+${B} APIs ${sum('out_per_s')} (±${rateTol})`);
    // The consumer group's lag is one figure for the fleet.
    const lagDt = (apiA.now_ms - pg.nowMs) / 1000;
    assert.ok(Math.abs(pg.lag - apiA.frames.consumer_lag) <= Math.ceil(rate * lagDt * 1.5) + batch,
      `consumer lag: page ${pg.lag}, API ${apiA.frames.consumer_lag}`);
    // Latency quantiles come from the merged histograms: the same within a factor of 2.
    for (const q of ['p50', 'p99']) {
      const x = pg[q], y = apiA.fleet.routing_latency_ms[q];
      assert.ok(x > 0 && y > 0 && x <= 2 * y && y <= 2 * x, `fleet latency ${q}: page ${x} ms, API ${y} ms`);
    }
    assert.ok(pg.p99 >= pg.p50, 'p99 ≥ p50');
    // The processor table counts the frames every replica routed.
    for (const p of apiA.processors) {
      const shown = pg.procs[p.id];
      assert.ok(shown, `processor ${p.id} is in the table`);
      assert.equal(shown.status, p.status, `${p.id}'s status`);
      assert.ok(p.fleet_frames_routed - shown.routed >= 0 && p.fleet_frames_routed - shown.routed <= grow,
        `${p.id} frames routed by the fleet: page ${shown.routed}, API ${p.fleet_frames_routed}`);
    }
    // The KPIs say in words what the numbers say.
    const text = await page.locator(sel('frames-in')).textContent();
    assert.match(text, /^[\d,.]+$/, `frames in reads as a number: ${text}`);
    await sleep(700);
  }
  assert.equal(await page.textContent(sel('chart-scope')), 'whole fleet');
  await shot('dashboard-light.png');
});

test('the replica table lists both replicas, marks this one, and picking gw-b shows gw-b\'s figures', { timeout: 60000 }, async (t) => {
  const list = await gw.get('/api/v1/replicas');
  const pg = await readPage();
  assert.deepEqual(Object.keys(pg.replicas), [A, B], 'both replicas, sorted by name');
  assert.equal(pg.replicas[A].self, true, `${A} serves the page`);
  assert.equal(pg.replicas[B].self, false);
  assert.equal(await page.locator(`tr[data-consumer="${A}"] ${sel('replica-self')}`).isVisible(), true, `"this page" on ${A}'s row`);
  assert.equal(await page.locator(`tr[data-consumer="${B}"] ${sel('replica-self')}`).isVisible(), false);
  for (const r of list) {
    const row = pg.replicas[r.consumer];
    assert.equal(row.version, r.version, `${r.consumer}'s version`);
    assert.deepEqual(row.conns, { redis: 'true', group: 'true', nats: 'off' }, `${r.consumer}'s connections (NATS_URL=none)`);
    assert.ok(Math.abs(row.uptime - r.uptime_s) <= 3, `${r.consumer}'s uptime: page ${row.uptime} s, API ${r.uptime_s} s`);
  }
  assert.ok(pg.replicas[A].uptime > pg.replicas[B].uptime, `${A} started first`);
  const options = await page.$$eval(`${sel('scope-select')} option`, (os) => os.map((o) => o.value));
  assert.deepEqual(options, ['', A, B], 'the selector offers the fleet and each replica');

  // Picking gw-b: the KPIs show gw-b's entry of the fleet view...
  await page.selectOption(sel('scope-select'), B);
  await page.waitForFunction((b) => document.querySelector('[data-testid="kpis"]').getAttribute('data-scope') === b, B, { timeout: 2000 });
  assert.match(await page.textContent(sel('scope-label')), new RegExp(`^Replica ${B}$`));
  assert.match(await page.textContent(sel('scope-note')), /chart and the processor table show the whole fleet/);
  assert.equal(await page.getAttribute(`tr[data-consumer="${B}"]`, 'aria-selected'), 'true');
  assert.equal(await page.textContent(sel('reasons-scope')), ` · ${B}`);
  await waitFor(async () => {
    const p = await readPage();
    const e = (await gw.get('/api/v1/replicas')).find((r) => r.consumer === B);
    if (!e || e.last_seen_ms !== p.asOf) return false; // the view moved on between the two reads
    assert.equal(p.scopeKind, 'replica');
    assert.deepEqual(
      [p.in, p.out, p.consumed, p.distributed, p.p50, p.p99, p.dropped, p.dlq],
      [e.in_per_s, e.out_per_s, e.consumed, e.distributed, e.routing_latency_ms.p50, e.routing_latency_ms.p99, total(e.dropped), total(e.dlq)],
      `the KPIs are ${B}'s entry of /api/v1/replicas`);
    return true;
  }, { timeout: 10000, interval: 100, what: `the page and /api/v1/replicas to show the same second of ${B}` });
  // ...which are gw-b's own numbers, a moment older than its API's, and not gw-a's.
  const p = await readPage();
  const [apiA, apiB] = await Promise.all([gw.get('/api/v1/stats'), gwB.get('/api/v1/stats')]);
  const dt = (apiB.now_ms - p.asOf) / 1000;
  const rate = Math.max(apiB.frames.in_per_s, p.in, INJECT_RATE / 2);
  const grow = Math.ceil(rate * dt * 1.5) + apiB.routing.batch_size;
  t.diagnostic(`${B}: dt=${dt.toFixed(3)} s; consumed page=${p.consumed} API ${B}=${apiB.frames.consumed} API ${A}=${apiA.frames.consumed}; in page=${p.in} API=${apiB.frames.in_per_s}`);
  assert.ok(dt >= 0 && dt < 5, `dt=${dt}`);
  assert.ok(apiB.frames.consumed - p.consumed >= 0 && apiB.frames.consumed - p.consumed <= grow,
    `${B} consumed: page ${p.consumed}, ${B}'s API ${apiB.frames.consumed} (allowed growth ${grow})`);
  assert.ok(apiA.frames.consumed - p.consumed > grow, `not ${A}'s figures (${A} consumed ${apiA.frames.consumed})`);
  assert.ok(Math.abs(p.in - apiB.frames.in_per_s) <= rate * (0.2 + dt), `${B} in/s: page ${p.in}, API ${apiB.frames.in_per_s}`);
  assert.ok(p.in < p.replicas[A].in + p.replicas[B].in, 'less than the fleet\'s in/s');
  assert.equal(await page.textContent(sel('chart-scope')), 'whole fleet', 'the chart stays fleet-wide');
  await shot('dashboard-replica.png');

  // A click on gw-a's row picks it; one on the fleet's row goes back.
  await page.click(`tr[data-consumer="${A}"] .rsel`);
  await page.waitForFunction((a) => document.querySelector('[data-testid="kpis"]').getAttribute('data-scope') === a, A, { timeout: 2000 });
  assert.equal(await page.textContent(sel('scope-label')), `Replica ${A} (this page)`);
  assert.equal(await page.inputValue(sel('scope-select')), A);
  const pa = await readPage();
  assert.equal(pa.consumed, pa.replicas[A].consumed, `${A}'s figures`);
  await page.click('#replica-total .rsel');
  await page.waitForFunction(() => document.querySelector('[data-testid="kpis"]').getAttribute('data-scope-kind') === 'fleet', null, { timeout: 2000 });
  assert.equal(await page.inputValue(sel('scope-select')), '');
  assert.equal(await page.textContent(sel('scope-label')), 'Whole fleet');
});

test('an event on gw-b shows once in gw-a\'s log, with gw-b\'s name and the request id', { timeout: 30000 }, async () => {
  const rid = `browser-register-${Date.now()}`;
  const r = await gwB.api('POST', '/api/v1/processors/register',
    { id: 'via-b-1', capabilities: ['elsewhere'], capacity: 1, queue: '', heartbeat_interval_ms: 0 }, undefined, { 'X-Request-ID': rid });
  assert.equal(r.status, 201, `register on ${B}: ${r.text}`);
  const reg = events('[data-event="register"][data-processor="via-b-1"]');
  await reg.first().waitFor({ state: 'attached', timeout: 5000 });
  await sleep(1500); // a second copy (one per replica) would be here by now
  assert.equal(await reg.count(), 1, 'the registration is in the log once');
  assert.equal(await reg.getAttribute('data-replica'), B);
  assert.equal(await reg.getAttribute('data-request-id'), rid);
  assert.equal(await reg.locator(sel('event-replica')).textContent(), B, 'the line names the replica');
  assert.match(await reg.getAttribute('title'), new RegExp(`${B}.*${rid}`), 'its title gives the replica and the request id');
  assert.equal(await page.evaluate(() => window.fbDashboard.state.events.filter((e) => e.processor_id === 'via-b-1').length), 1);
  // The registry is the fleet's: gw-a's table has the processor too.
  await page.waitForSelector(sel('proc-row-via-b-1'), { state: 'attached', timeout: 5000 });

  const rid2 = `browser-unregister-${Date.now()}`;
  const d = await gwB.api('DELETE', '/api/v1/processors/via-b-1', undefined, undefined, { 'X-Request-ID': rid2 });
  assert.ok(d.status === 200 || d.status === 204, `unregister on ${B}: ${d.status} ${d.text}`);
  const unreg = events(`[data-event="unregister"][data-processor="via-b-1"]`);
  await unreg.first().waitFor({ state: 'attached', timeout: 5000 });
  await sleep(1000);
  assert.equal(await unreg.count(), 1, 'the removal is in the log once');
  assert.equal(await unreg.getAttribute('data-replica'), B);
  assert.equal(await unreg.getAttribute('data-request-id'), rid2);
  await page.waitForSelector(sel('proc-row-via-b-1'), { state: 'detached', timeout: 5000 });
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
  // One set for the fleet: gw-b has it too (it polls the stored set 5 times
  // a second), and the page says where it comes from.
  const onB = await waitFor(async () => {
    const r = await gwB.get('/api/v1/routing');
    return r.strategy === target && r.source.strategy === 'fleet' && r;
  }, { timeout: 3000, what: `${B} to route with ${target} too` });
  assert.equal(onB.updated_by, A, `${A} changed it`);
  await page.waitForSelector(`${sel('src-strategy')}[data-src="fleet"]`, { timeout: 3000 });
  assert.equal(await page.getAttribute(sel('src-overload_policy'), 'data-src'), 'config');
  assert.equal(await page.isEnabled(sel('routing-reset')), true, 'something to reset');
  await sleep(1000);
  const line = events(`[data-event="strategy"][data-status="${target}"]`);
  assert.equal(await line.count(), 1, 'the change is in the log once');
  assert.equal(await line.getAttribute('data-replica'), A);
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
  assert.ok(await pp.locator(`tr[data-consumer="${B}"]`).isVisible(), 'the replica table shows on a phone');
  assert.ok(await pp.locator(sel('scope-select')).isVisible(), 'and the replica selector');
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

test('"Reset to defaults" sends DELETE /api/v1/routing with the token; every replica is back to its configuration', { timeout: 30000 }, async () => {
  // A change made on gw-b (no token there): one "routing" event, from gw-b.
  // gw-b first catches up with the settings gw-a stored (it polls them), so
  // that its event compares with what is in force.
  await waitFor(async () => (await gwB.get('/api/v1/routing')).generation === (await gw.get('/api/v1/routing')).generation,
    { timeout: 3000, what: `${B} to have the fleet's settings` });
  const rid = `browser-routing-${Date.now()}`;
  const put = await gwB.api('PUT', '/api/v1/routing', { overload_policy: 'reject', hash_bound: 1.5 }, undefined, { 'X-Request-ID': rid });
  assert.equal(put.status, 200, put.text);
  const changed = events(`[data-event="routing"][data-request-id="${rid}"]`);
  await changed.first().waitFor({ state: 'attached', timeout: 5000 });
  await page.waitForFunction(() => document.querySelector('[data-testid="overload-policy"]').textContent === 'reject' &&
    document.querySelector('[data-testid="hash-bound"]').textContent === '×1.50', null, { timeout: 3000 });
  await sleep(1000);
  assert.equal(await changed.count(), 1, 'the change is in the log once');
  assert.equal(await changed.getAttribute('data-replica'), B);
  assert.equal(await changed.getAttribute('data-status'), 'changed');
  assert.match(await changed.textContent(), /hash_bound 1\.25 -> 1\.5/);
  for (const k of ['strategy', 'overload_policy', 'hash_bound']) {
    assert.equal(await page.getAttribute(sel(`src-${k}`), 'data-src'), 'fleet', `${k} comes from the fleet`);
  }
  for (const k of ['frame_max_age_ms', 'slow_start_ms']) {
    assert.equal(await page.getAttribute(sel(`src-${k}`), 'data-src'), 'config', `${k} comes from the configuration`);
  }
  assert.match(await page.textContent(sel('routing-origin')), new RegExp(`^Stored for the fleet by ${B} `));

  // Without the token (gw-a wants one): the gateway's 401, nothing changes.
  await page.fill(sel('api-token'), '');
  const expected = (await gw.api('DELETE', '/api/v1/routing')).json.detail;
  await page.click(sel('routing-reset'));
  await page.waitForFunction(() => /^401: /.test(document.querySelector('[data-testid="strategy-msg"]').textContent), null, { timeout: 5000 });
  assert.equal(await page.textContent(sel('strategy-msg')), `401: ${expected}`);
  assert.equal((await gw.get('/api/v1/routing')).source.overload_policy, 'fleet', 'nothing reset without the token');

  // With it.
  await page.fill(sel('api-token'), TOKEN);
  const sent = page.waitForRequest((r) => r.url().endsWith('/api/v1/routing') && r.method() === 'DELETE');
  await page.click(sel('routing-reset'));
  const req = await sent;
  assert.equal(req.headers().authorization, `Bearer ${TOKEN}`, 'the DELETE carries the token');
  await page.waitForFunction(() => /^Reset: /.test(document.querySelector('[data-testid="strategy-msg"]').textContent), null, { timeout: 5000 });
  const fromConfig = (r) => Object.values(r.source).every((v) => v === 'config');
  const onA = await gw.get('/api/v1/routing');
  assert.ok(fromConfig(onA), `${A}: every setting from the configuration at once (${JSON.stringify(onA.source)})`);
  // gw-b within its poll of the stored set.
  const onB = await waitFor(async () => { const r = await gwB.get('/api/v1/routing'); return fromConfig(r) && r; },
    { timeout: 3000, what: `${B} to have every setting from the configuration` });
  for (const [name, r] of [[A, onA], [B, onB]]) {
    assert.deepEqual([r.strategy, r.overload_policy, r.hash_bound], ['least_loaded', 'drop_oldest', 1.25], `${name}'s configured values`);
  }
  await page.waitForFunction(() => [...document.querySelectorAll('.settings .src[data-testid^="src-"]')]
    .every((e) => e.getAttribute('data-src') === 'config'), null, { timeout: 3000 });
  assert.equal(await page.textContent(sel('strategy-current')), 'least_loaded');
  assert.equal(await page.textContent(sel('overload-policy')), 'drop_oldest');
  assert.equal(await page.isDisabled(sel('routing-reset')), true, 'nothing left to reset');
  // The reset is in the log once, from gw-a.
  const reset = events(`[data-replica="${A}"]`).filter({ hasText: 'reset to defaults' });
  await reset.first().waitFor({ state: 'attached', timeout: 3000 });
  await sleep(1000);
  assert.equal(await reset.count(), 1, 'the reset is in the log once');
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

test('without the fleet view (an older gateway) the page shows the replica\'s own figures', { timeout: 30000 }, async () => {
  // The same gateway, its messages stripped of everything the fleet added.
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: 'light' });
  const p = await ctx.newPage();
  p.on('pageerror', (e) => pageErrors.push(e.message));
  const strip = (e) => { delete e.replica; delete e.request_id; return e; };
  await p.routeWebSocket(/\/ws$/, (ws) => {
    const server = ws.connectToServer();
    server.onMessage((m) => {
      const j = JSON.parse(m);
      if (j.type === 'snapshot') {
        delete j.fleet;
        delete j.replicas;
        for (const k of ['source', 'generation', 'updated_by', 'request_id', 'updated_at_ms']) delete j.routing[k];
        for (const x of j.processors) { delete x.fleet_frames_routed; delete x.fleet_rate; }
      } else if (j.type === 'hello') {
        j.events.forEach(strip);
      } else if (j.type === 'event') {
        strip(j);
      }
      ws.send(JSON.stringify(j));
    });
  });
  await p.goto(gw.base + '/');
  await p.waitForSelector(`${sel('conn-status')}[data-state="live"]`, { timeout: 10000 });
  await p.waitForFunction(() => window.fbDashboard.state.snapshots >= 3, null, { timeout: 5000 });
  for (const id of ['scope-bar', 'replicas-card', 'replica-count-wrap', 'routing-reset', 'src-strategy', 'routing-origin', 'proc-scope']) {
    assert.equal(await p.locator(sel(id)).isHidden(), true, `${id} is hidden`);
  }
  assert.equal(await p.locator(sel('event-replica')).count(), 0, 'no replica on the events');
  assert.ok(await p.locator(sel('event')).count() > 0, 'the events still show');
  assert.equal(await p.textContent(sel('chart-scope')), 'this replica');
  const pg = await readPage(p);
  const api = await gw.get('/api/v1/stats');
  assert.equal(pg.scopeKind, 'self');
  assert.equal(pg.asOf, pg.nowMs);
  const dt = (api.now_ms - pg.nowMs) / 1000;
  const rate = Math.max(api.frames.in_per_s, pg.in, INJECT_RATE / 2);
  const grow = Math.ceil(rate * dt * 1.5) + api.routing.batch_size;
  assert.ok(dt >= 0 && dt < 5, `dt=${dt}`);
  // gw-a's own counters (the fleet's are larger: a page showing them fails here).
  for (const [name, x, y] of [['consumed', pg.consumed, api.frames.consumed], ['distributed', pg.distributed, api.frames.distributed],
    ['alive-1 routed', pg.procs['alive-1'].routed, api.processors.find((q) => q.id === 'alive-1').frames_routed]]) {
    assert.ok(y - x >= 0 && y - x <= grow, `${name}: page ${x}, ${A}'s own ${y} (allowed growth ${grow})`);
  }
  assert.ok(Math.abs(pg.in - api.frames.in_per_s) <= rate * (0.2 + dt), `in/s: page ${pg.in}, ${A}'s own ${api.frames.in_per_s}`);
  assert.equal(await p.locator(sel('strategy-select')).isEnabled(), true, 'the strategy can still be changed');
  await shot('dashboard-no-fleet.png', p);
  await ctx.close();
});

test('the DLQ panel pages through entries by reason and replays them with the token', { timeout: 60000 }, async () => {
  // Frames of a type no processor takes (no_processor) and malformed ones.
  for (const args of [['--types', 'ghost', '--frames', '120', '--cameras', '3'], ['--malformed-every', '1', '--frames', '4']]) {
    const inj = new Proc('fb-inject-dlq', fbBinary('fb-inject'), ['--redis-url', redis.url, '--quiet', ...args], { logDir: out });
    assert.equal((await inj.exited).code, 0, 'fb-inject for the DLQ');
  }
  const count = async (reason) => (await gw.get('/api/v1/dlq/summary')).reasons[reason].count;
  await waitFor(async () => (await count('no_processor')) >= 120 && (await count('malformed')) >= 4,
    { timeout: 10000, what: 'the DLQ to hold the ghost and malformed frames' });
  const ctx = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: 'light' });
  const p = await ctx.newPage(); // a new tab: no API token kept yet
  p.on('pageerror', (e) => pageErrors.push(e.message));
  await p.goto(gw.base + '/');
  const card = p.locator(sel('dlq-card'));
  await card.locator(sel('dlq-row')).first().waitFor({ timeout: 10000 });
  const sum = await gw.get('/api/v1/dlq/summary');
  const button = (r) => card.locator(`${sel('dlq-reasons')} button[data-reason="${r}"]`);
  assert.equal(Number(await button('no_processor').getAttribute('data-count')), sum.reasons.no_processor.count);
  assert.equal(Number(await button('malformed').getAttribute('data-count')), sum.reasons.malformed.count);
  assert.equal(await card.locator(sel('dlq-replay')).isDisabled(), true, 'no replay of every reason at once');

  // One reason, page by page, as the API pages it.
  await button('no_processor').click();
  await p.waitForFunction(() => [...document.querySelectorAll('[data-testid="dlq-row"]')].every((r) => r.dataset.reason === 'no_processor'),
    null, { timeout: 5000 });
  const rows = () => card.locator(sel('dlq-row')).evaluateAll((rs) => rs.map((r) => r.dataset.id));
  const page1 = await rows();
  const api1 = await gw.get('/api/v1/dlq?reason=no_processor&limit=50');
  assert.deepEqual(page1, api1.entries.map((e) => e.id), 'page 1 is the API\'s, newest first');
  await card.locator(sel('dlq-older')).click();
  await p.waitForFunction((first) => document.querySelector('[data-testid="dlq-row"]')?.dataset.id !== first, page1[0], { timeout: 5000 });
  const api2 = await gw.get(`/api/v1/dlq?reason=no_processor&limit=50&after=${api1.next}`);
  assert.deepEqual(await rows(), api2.entries.map((e) => e.id), 'page 2 goes on where page 1 ended');
  assert.equal(await card.locator(sel('dlq-page')).textContent(), 'page 2');
  await card.locator(sel('dlq-newer')).click();
  await p.waitForFunction((first) => document.querySelector('[data-testid="dlq-row"]')?.dataset.id === first, page1[0], { timeout: 5000 });

  // Replay: 401 without a token (the panel asks for it), then with it.
  const replay = card.locator(sel('dlq-replay'));
  assert.equal(await replay.textContent(), 'Replay no_processor');
  await replay.click();
  await p.waitForFunction(() => /^401: /.test(document.querySelector('[data-testid="dlq-msg"]').textContent), null, { timeout: 5000 });
  assert.equal(await card.locator(sel('dlq-token')).isVisible(), true, 'the panel asks for the token');
  assert.equal(await count('no_processor'), sum.reasons.no_processor.count, 'nothing replayed without the token');
  await card.locator(sel('dlq-token')).fill(TOKEN);
  const answer = p.waitForResponse((r) => r.url().endsWith('/api/v1/dlq/replay') && r.request().method() === 'POST');
  await replay.click();
  const body = await (await answer).json();
  assert.ok(body.replayed >= sum.reasons.no_processor.count, `replayed ${JSON.stringify(body)}`);
  await p.waitForFunction(() => /^Replayed \d+, skipped \d+/.test(document.querySelector('[data-testid="dlq-msg"]').textContent), null, { timeout: 5000 });
  // Nobody takes "ghost": the frames come back to the DLQ, replayed once.
  await waitFor(async () => (await gw.get('/api/v1/dlq?reason=no_processor&limit=1000')).entries.filter((e) => e.replayed === 1).length >= 120,
    { timeout: 10000, what: 'the ghost frames back in the DLQ with replayed=1' });
  await card.locator(sel('dlq-refresh')).click();
  await p.waitForFunction(() => document.querySelector('[data-testid="dlq-row"] [data-testid="dlq-replayed"]')?.textContent === '1', null, { timeout: 5000 });
  await shot('dashboard-dlq.png', p);
  await ctx.close();
});

test('finding a frame shows where it went, and a shadow shows with its copies a second', { timeout: 60000 }, async () => {
  // A shadow copying every person frame to alive-1.
  const put = await gw.api('PUT', '/api/v1/shadows/mirror', { match: { detection_type: 'person' }, target: 'alive-1', percent: 100 }, TOKEN);
  assert.equal(put.status, 201, put.text);
  const ctx = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: 'light' });
  const p = await ctx.newPage();
  p.on('pageerror', (e) => pageErrors.push(e.message));
  await p.goto(gw.base + '/');
  const row = p.locator(`${sel('shadows-body')} tr[data-shadow="mirror"]`);
  await row.waitFor({ timeout: 5000 });
  // The rate needs two readings 2 s apart; injection runs at 500/s.
  await p.waitForFunction(() => {
    const r = document.querySelector('tr[data-shadow="mirror"]');
    return r && /^[1-9]\d*\/s$/.test(r.children[4].textContent);
  }, null, { timeout: 10000 });
  const cells = await row.locator('td').allTextContents();
  assert.deepEqual(cells.slice(0, 4), ['mirror', 'person', '100% by camera', 'alive-1']);

  // The page finds a frame as the API does.
  const { entries } = await gw.get('/api/v1/dlq?limit=1'); // a frame the fleet routed
  const id = entries.length ? entries[0].fields.frame_id : null;
  assert.ok(id, 'a frame id to look for');
  const api = await gw.get('/api/v1/frames/' + encodeURIComponent(id));
  await p.fill(sel('frame-id'), id);
  await p.click(sel('frame-find'));
  await p.locator(sel('frame-fate')).waitFor({ timeout: 5000 });
  const shown = await p.locator(`${sel('frame-fate')} dd`).evaluateAll((dds) =>
    Object.fromEntries(dds.map((d) => [d.dataset.field, d.textContent])));
  assert.equal(shown.outcome, api.outcome);
  assert.equal(shown.replica, api.replica);
  assert.equal(shown.source_id, api.source_id);
  // An unknown one: the 404's detail, with the window.
  await p.fill(sel('frame-id'), 'no-such-frame');
  await p.click(sel('frame-find'));
  await p.waitForFunction(() => /not in the trace/.test(document.querySelector('[data-testid="frame-msg"]').textContent), null, { timeout: 5000 });
  await shot('dashboard-debug.png', p);
  assert.equal((await gw.api('DELETE', '/api/v1/shadows/mirror', undefined, TOKEN)).status, 204);
  await ctx.close();
});

test('no JavaScript errors on the page', () => {
  assert.deepEqual(pageErrors, []);
});
