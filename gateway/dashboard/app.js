/*
 * frame-buffer live dashboard. Plain JavaScript, no dependencies.
 *
 * The gateway pushes everything over one WebSocket (/ws, subprotocol
 * "fb-dashboard"): a "hello" on connect (recent events and the throughput
 * history), a "snapshot" (the fields of GET /api/v1/stats) about four times a
 * second, and an "event" whenever something happens. The page itself only
 * asks GET /readyz once (to tell NATS "disabled" from "down") and sends
 * PUT /api/v1/routing when the operator changes the strategy, DELETE
 * /api/v1/routing when they reset the settings to the configured ones.
 *
 * The gateway runs as a fleet of replicas sharing one Redis. A snapshot's
 * own fields are the serving replica's; `fleet` holds the totals over every
 * live replica and `replicas` each one's figures (both refreshed once a
 * second). The page shows the fleet unless the operator picks one replica
 * (the KPIs and drops then show that replica's entry of `replicas`; the
 * chart and the processor table stay fleet-wide). A snapshot without
 * `fleet` (an older gateway) shows the serving replica's own figures.
 */
"use strict";

(function () {
  // ------------------------------------------------------------ helpers

  var root = document.documentElement;

  function $(sel) { return document.querySelector(sel); }
  function tid(name) { return document.querySelector('[data-testid="' + name + '"]'); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function num(v) { return typeof v === "number" && isFinite(v) ? v : null; }

  var nfInt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  var nf1 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  var collator = new Intl.Collator("en", { numeric: true, sensitivity: "base" });

  function fmtInt(v) { return num(v) == null ? "—" : nfInt.format(v); }
  function fmtRate(v) {
    if (num(v) == null) return "—";
    return v > 0 && v < 10 ? nf1.format(v) : nfInt.format(Math.round(v));
  }
  function fmtMs(v) {
    if (num(v) == null) return "—";
    if (v === 0) return "0 ms";
    if (v < 1) return Math.max(1, Math.round(v * 1000)) + " µs";
    if (v < 10) return v.toFixed(2) + " ms";
    if (v < 100) return v.toFixed(1) + " ms";
    return nfInt.format(Math.round(v)) + " ms";
  }
  function fmtAge(ms) {
    if (ms == null) return "never";
    if (ms < 0) ms = 0;
    var s = ms / 1000;
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 90) return Math.round(s) + " s";
    var m = Math.floor(s / 60);
    if (m < 90) return m + " min";
    var h = Math.floor(m / 60);
    if (h < 48) return h + " h " + (m % 60) + " min";
    return Math.floor(h / 24) + " d";
  }
  function fmtUptime(s) {
    if (num(s) == null) return "—";
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    var m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + sec + "s";
    return sec + "s";
  }
  function fmtClock(ms) {
    var d = new Date(ms);
    function p(n) { return (n < 10 ? "0" : "") + n; }
    return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }

  /* Sets an element's text and its raw value (data-value, read by tests and
   * tools) only when they change, so the DOM is not touched 4 times a second
   * for nothing. */
  function show(elem, value, text) {
    if (!elem) return;
    var v = value == null ? "" : String(value);
    if (elem.getAttribute("data-value") !== v) elem.setAttribute("data-value", v);
    if (elem.textContent !== text) elem.textContent = text;
  }
  function setText(elem, text) {
    if (elem && elem.textContent !== text) elem.textContent = text;
  }

  function storageGet(store, key) {
    try { return window[store].getItem(key); } catch (e) { return null; }
  }
  function storageSet(store, key, value) {
    try {
      if (value) window[store].setItem(key, value);
      else window[store].removeItem(key);
    } catch (e) { /* storage blocked: keep it in memory only */ }
  }

  // -------------------------------------------------------------- state

  var HISTORY_MS = 5 * 60 * 1000;
  var MAX_EVENTS = 200;
  var STATUS_ORDER = { dead: 0, stale: 1, stopping: 1, healthy: 2, removed: 3 };

  var state = {
    authRequired: false,
    snap: null,            // the last snapshot
    history: [],           // [{t, in, out}], oldest first, server clock
    events: [],            // newest first
    procs: [],             // the last snapshot's processors, with derived fields
    rates: new Map(),      // id -> {routed, t, rate}: frames/s when the gateway sends none
    dropWin: [],           // [{t, dropped, dlq}] over the last few seconds
    sort: { key: "id", dir: 1 },
    filterText: "",
    filterStatus: "",
    current: {},           // routing settings in force: {strategy, overload_policy}
    options: {},           // the values the gateway accepts for each
    dirty: {},             // the operator picked something not yet applied
    snapshots: 0,          // snapshots received (tests read it)
    perf: { message: [], render: [] },
    logPaused: false,
    scope: storageGet("sessionStorage", "fb-scope") || "", // "" = the fleet, else a replica's consumer name
    dropKey: null,         // the scope dropWin was taken for
    source: null,          // routing setting -> "fleet" | "config" (null: the gateway does not say)
    routingMeta: null,     // {generation, updatedBy, requestId, updatedAt}
    self: null             // the serving replica's consumer name
  };

  // --------------------------------------------------------- connection

  var conn = {
    ws: null,
    everConnected: false,
    attempt: 0,
    retryAt: 0,
    retryTimer: 0,
    lastMessage: 0
  };
  var BACKOFF_S = [1, 2, 4, 8, 15];
  var SILENCE_MS = 6000; // no message for this long on an open socket: treat it as lost

  var pill = tid("conn-status");
  var banner = tid("conn-banner");
  var bannerText = tid("conn-banner-text");
  var mainEl = $("#main");

  function setConnState(s) {
    if (pill.getAttribute("data-state") === s) return;
    state.conn = s;
    updateTitle();
    pill.setAttribute("data-state", s);
    setText(pill.querySelector(".conn-text"),
      s === "live" ? "Live" : s === "connecting" ? "Connecting…" : "Disconnected");
    pill.title = s === "live" ? "Receiving live updates from the gateway"
      : s === "connecting" ? "Connecting to the gateway" : "Not connected to the gateway";
    mainEl.classList.toggle("stale", s !== "live");
  }

  function wsUrl() {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  }

  function connect() {
    clearTimeout(conn.retryTimer);
    conn.retryTimer = 0;
    conn.retryAt = 0;
    if (conn.ws) {
      var old = conn.ws;
      conn.ws = null;
      try { old.close(); } catch (e) { /* already closed */ }
    }
    setConnState("connecting");
    if (!banner.hidden) setText(bannerText, bannerPrefix() + " — reconnecting…");
    var ws;
    try {
      ws = new WebSocket(wsUrl(), "fb-dashboard");
    } catch (e) {
      lost();
      return;
    }
    conn.ws = ws;
    conn.lastMessage = performance.now();
    ws.onopen = function () { conn.lastMessage = performance.now(); };
    ws.onmessage = function (ev) {
      if (conn.ws !== ws) return;
      var t0 = performance.now();
      conn.lastMessage = t0;
      var msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (!msg || typeof msg !== "object") return;
      if (pill.getAttribute("data-state") !== "live") online();
      if (msg.type === "hello") onHello(msg);
      else if (msg.type === "snapshot") onSnapshot(msg);
      else if (msg.type === "event") onEvent(msg, true);
      if (msg.type === "snapshot") timing(state.perf.message, performance.now() - t0);
    };
    ws.onclose = function () {
      if (conn.ws !== ws) return;
      conn.ws = null;
      lost();
    };
    ws.onerror = function () { /* a close follows */ };
  }

  function online() {
    conn.everConnected = true;
    setConnState("live");
    banner.hidden = true;
  }

  function bannerPrefix() {
    return conn.everConnected ? "Connection to the gateway lost" : "Cannot reach the gateway";
  }

  function lost() {
    setConnState("disconnected");
    var delay = BACKOFF_S[Math.min(conn.attempt, BACKOFF_S.length - 1)] * 1000;
    delay = Math.round(delay * (0.85 + Math.random() * 0.3));
    conn.attempt++;
    conn.retryAt = Date.now() + delay;
    clearTimeout(conn.retryTimer);
    conn.retryTimer = setTimeout(connect, delay);
    banner.hidden = false;
    updateBanner();
  }

  function updateBanner() {
    if (banner.hidden || !conn.retryAt) return;
    var s = Math.max(1, Math.ceil((conn.retryAt - Date.now()) / 1000));
    setText(bannerText, bannerPrefix() + " — reconnecting in " + s + " s");
  }

  setInterval(function () {
    updateBanner();
    // An open socket that has gone quiet (a stalled gateway, a dead NAT
    // mapping) is as good as closed.
    var ws = conn.ws;
    if (ws && performance.now() - conn.lastMessage > SILENCE_MS) {
      conn.ws = null;
      try { ws.close(); } catch (e) { /* nothing to do */ }
      lost();
    }
  }, 250);

  $("#retry-now").addEventListener("click", function () { conn.attempt = 0; connect(); });
  window.addEventListener("online", function () { if (!conn.ws) { conn.attempt = 0; connect(); } });

  // ------------------------------------------------------------ messages

  function onHello(m) {
    conn.attempt = 0;
    state.authRequired = !!m.auth_required;
    $("#token-row").hidden = !state.authRequired && !$("#token-row").dataset.forced;
    state.self = typeof m.consumer === "string" ? m.consumer : state.self;
    setText(tid("consumer"), m.consumer || "—");
    setText(tid("version"), m.version ? "v" + m.version : "v—");
    if (Array.isArray(m.history)) {
      var server = m.history
        .filter(function (p) { return p && num(p.t) != null; })
        .map(function (p) { return { t: p.t, in: num(p.in) || 0, out: num(p.out) || 0 }; });
      // After a reconnect (perhaps to a restarted gateway with a short
      // history) keep what the page saw before the gateway's first point.
      var firstT = server.length ? server[0].t : Infinity;
      state.history = state.history.filter(function (p) { return p.t < firstT - 500; }).concat(server);
    }
    if (Array.isArray(m.events)) {
      // Newest first; after a reconnect the page's older events stay below
      // the gateway's recent ones.
      var recent = m.events.filter(function (e) { return e && typeof e === "object"; }).reverse();
      var oldest = recent.length ? num(recent[recent.length - 1].at) : null;
      var older = oldest == null ? state.events
        : state.events.filter(function (e) { return num(e.at) != null && e.at < oldest; });
      state.events = recent.concat(older).slice(0, MAX_EVENTS);
      renderLog();
    }
    scheduleRender();
  }

  function onSnapshot(s) {
    state.snap = s;
    // The chart shows the fleet (the hello's history is the fleet's too);
    // without a fleet view, this replica.
    var f = fleetOf(s) || s.frames || {};
    var t = num(s.now_ms) || Date.now();
    var h = state.history;
    var last = h.length ? h[h.length - 1] : null;
    if (!last || t - last.t >= 1000) {
      h.push({ t: t, in: num(f.in_per_s) || 0, out: num(f.out_per_s) || 0 });
    } else if (last) {
      // Keep the newest second's point current between whole seconds.
      last.in = num(f.in_per_s) || 0;
      last.out = num(f.out_per_s) || 0;
    }
    while (h.length && h[0].t < t - HISTORY_MS - 2000) h.shift();
    if (h.length > 400) h.splice(0, h.length - 400);
    state.snapshots++;
    routingFromSnapshot(s.routing);
    updateProcs(s, t);
    trackDrops(scoped(s), t);
    scheduleRender();
  }

  function onEvent(e, live) {
    state.events.unshift(e);
    if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
    if (live) {
      if (!state.logPaused) prependLog(e);
      else setText(tid("event-count"), "· " + state.events.length + " (paused)");
      // Apply what the event says at once; the next snapshot confirms it.
      if (e.processor_id && (e.event === "health" || e.event === "register")) {
        for (var i = 0; i < state.procs.length; i++) {
          if (state.procs[i].id === e.processor_id && e.status) {
            state.procs[i].status = e.status;
            state.viewDirty = true;
          }
        }
      } else if (e.processor_id && e.event === "unregister") {
        state.procs = state.procs.filter(function (p) { return p.id !== e.processor_id; });
        state.viewDirty = true;
      } else if (e.event === "strategy" && e.status) {
        state.current.strategy = e.status;
      }
      scheduleRender();
    }
  }

  // ---------------------------------------------------------- processors

  function updateProcs(s, now) {
    var list = Array.isArray(s.processors) ? s.processors : [];
    var seen = new Set();
    var out = new Array(list.length);
    for (var i = 0; i < list.length; i++) {
      var p = list[i] || {};
      var id = String(p.id);
      seen.add(id);
      // The fleet's counts when the gateway gives them, else this replica's.
      var ownRouted = num(p.frames_routed), ownRate = num(p.rate);
      var fleetRouted = num(p.fleet_frames_routed), fleetRate = num(p.fleet_rate);
      var routed = (fleetRouted != null ? fleetRouted : ownRouted) || 0;
      var rate = fleetRouted != null ? fleetRate : ownRate;
      if (rate == null) {
        // No rate from the gateway: derive it from frames_routed.
        var r = state.rates.get(id);
        if (!r) state.rates.set(id, (r = { routed: routed, t: now, rate: 0 }));
        else if (now - r.t >= 900) {
          var inst = Math.max(0, routed - r.routed) * 1000 / (now - r.t);
          r.rate = r.rate ? r.rate * 0.5 + inst * 0.5 : inst;
          r.routed = routed;
          r.t = now;
        }
        rate = r.rate;
      }
      var hb = num(p.last_heartbeat_ms);
      if (hb == null && typeof p.last_heartbeat === "string") {
        var parsed = Date.parse(p.last_heartbeat);
        hb = isNaN(parsed) ? null : parsed;
      }
      var maxq = num(p.max_queue);
      if (maxq == null && p.metadata && num(p.metadata.queue_maxlen) != null) maxq = p.metadata.queue_maxlen;
      if (maxq == null) maxq = 10000;
      var caps = Array.isArray(p.capabilities) ? p.capabilities.map(String) : [];
      out[i] = {
        id: id,
        status: String(p.status || "unknown"),
        transport: String(p.transport || "redis"),
        caps: caps,
        capsText: caps.join(", "),
        rate: rate,
        routed: routed,
        ownRate: fleetRouted != null ? ownRate : null, // this replica's share, for the tooltip
        ownRouted: fleetRouted != null ? ownRouted : null,
        depth: num(p.queue_depth) || 0,
        maxq: maxq,
        capacity: num(p.capacity),
        weight: num(p.weight),
        hb: hb,
        hbAge: hb == null ? null : Math.max(0, now - hb),
        hbInterval: num(p.heartbeat_interval_ms),
        search: (id + " " + caps.join(" ") + " " + (p.transport || "redis") + " " + (p.status || "")).toLowerCase()
      };
    }
    state.rates.forEach(function (_, id) { if (!seen.has(id)) state.rates.delete(id); });
    state.procs = out;
    state.viewDirty = true;
  }

  function sortValue(p, key) {
    switch (key) {
      case "status": return STATUS_ORDER[p.status] != null ? STATUS_ORDER[p.status] : 9;
      case "transport": return p.transport;
      case "capabilities": return p.capsText;
      case "rate": return p.rate || 0;
      case "frames_routed": return p.routed;
      case "queue": return p.maxq > 0 ? p.depth / p.maxq : p.depth;
      case "heartbeat": return p.hbAge == null ? Infinity : p.hbAge;
      default: return p.id;
    }
  }

  function computeView() {
    var terms = state.filterText.toLowerCase().split(/\s+/).filter(Boolean);
    var st = state.filterStatus;
    var key = state.sort.key, dir = state.sort.dir;
    var v = state.procs.filter(function (p) {
      if (st && p.status !== st) return false;
      for (var i = 0; i < terms.length; i++) if (p.search.indexOf(terms[i]) < 0) return false;
      return true;
    });
    v.sort(function (a, b) {
      var x = sortValue(a, key), y = sortValue(b, key), c;
      if (typeof x === "string" || typeof y === "string") c = collator.compare(String(x), String(y));
      else c = x < y ? -1 : x > y ? 1 : 0;
      return c * dir || collator.compare(a.id, b.id);
    });
    state.view = v;
    state.viewDirty = false;
  }

  var procScroll = $("#proc-scroll");
  var procBody = $("#proc-body");
  var COLS = ["c-status", "c-id", "c-transport", "c-caps", "c-num c-rate", "c-num c-routed", "c-queue", "c-num c-hb"];
  /* The rows above and below the rendered window. They have one cell per
   * column (no colspan): a fixed-layout table gives hidden columns width
   * when a row spans them. */
  function spacer() {
    var tr = el("tr", "spacer");
    tr.setAttribute("aria-hidden", "true");
    COLS.forEach(function (c) { tr.appendChild(el("td", c)); });
    return tr;
  }
  var topSpacer = spacer();
  var bottomSpacer = spacer();
  var rowCache = new Map(); // id -> tr, only rows in the DOM
  var rowH = 0;
  var OVERSCAN = 10;

  function makeRow(id) {
    var tr = el("tr");
    tr.setAttribute("data-testid", "proc-row-" + id);
    tr.setAttribute("data-id", id);
    tr._cells = COLS.map(function (c) { var td = el("td", c); tr.appendChild(td); return td; });
    tr._vals = [];
    // status
    var st = el("span", "status");
    st.appendChild(el("i"));
    st.appendChild(el("span"));
    tr._cells[0].appendChild(st);
    tr._cells[1].textContent = id;
    tr._cells[1].title = id;
    tr._cells[1].setAttribute("data-testid", "proc-id");
    tr._cells[0].setAttribute("data-testid", "proc-status");
    tr._cells[4].setAttribute("data-testid", "proc-rate");
    tr._cells[5].setAttribute("data-testid", "proc-routed");
    tr._cells[7].setAttribute("data-testid", "proc-heartbeat");
    // queue
    var q = el("div", "qcell");
    var bar = el("div", "qbar");
    bar.appendChild(el("b"));
    q.appendChild(bar);
    var qn = el("span", "qnum");
    qn.appendChild(el("span", "qdepth"));
    qn.appendChild(el("span", "qmax"));
    q.appendChild(qn);
    tr._cells[6].appendChild(q);
    tr._cells[6].setAttribute("data-testid", "proc-queue");
    return tr;
  }

  function put(tr, i, key, fn) {
    if (tr._vals[i] === key) return;
    tr._vals[i] = key;
    fn(tr._cells[i]);
  }

  function updateRow(tr, p) {
    if (tr.getAttribute("data-status") !== p.status) {
      var prev = tr.getAttribute("data-status");
      tr.setAttribute("data-status", p.status);
      if (prev) {
        tr.classList.remove("flash");
        void tr.offsetWidth; // restart the animation
        tr.classList.add("flash");
      }
    }
    put(tr, 0, p.status, function (td) {
      var s = td.firstChild;
      s.className = "status " + p.status;
      s.lastChild.textContent = p.status;
    });
    put(tr, 2, p.transport, function (td) {
      td.textContent = "";
      td.appendChild(el("span", "tag " + (p.transport === "nats" ? "nats" : "redis"), p.transport));
    });
    put(tr, 3, p.capsText, function (td) {
      td.textContent = "";
      p.caps.forEach(function (c) { td.appendChild(el("span", "tag", c)); });
      td.title = p.capsText;
    });
    var rate = fmtRate(p.rate);
    put(tr, 4, rate + "|" + p.ownRate, function (td) {
      td.textContent = rate;
      td.setAttribute("data-value", String(p.rate));
      td.title = p.ownRate == null ? "" : "whole fleet; this replica " + fmtRate(p.ownRate) + " frames/s";
    });
    var routed = fmtInt(p.routed);
    put(tr, 5, routed + "|" + p.ownRouted, function (td) {
      td.textContent = routed;
      td.setAttribute("data-value", String(p.routed));
      td.title = p.ownRouted == null ? "" : "whole fleet; this replica " + fmtInt(p.ownRouted);
    });
    var frac = p.maxq > 0 ? Math.min(1, p.depth / p.maxq) : 0;
    var qkey = p.depth + "/" + p.maxq;
    put(tr, 6, qkey, function (td) {
      var bar = td.firstChild.firstChild;
      bar.className = "qbar" + (frac >= 0.9 ? " full" : frac >= 0.6 ? " warn" : "");
      bar.firstChild.style.width = (frac * 100).toFixed(1) + "%";
      var qn = td.firstChild.lastChild;
      qn.firstChild.textContent = fmtInt(p.depth);
      qn.lastChild.textContent = " / " + fmtInt(p.maxq);
      td.title = "queue depth " + p.depth + " of at most " + p.maxq +
        (p.capacity != null ? " · capacity " + p.capacity : "") + (p.weight != null ? " · weight " + p.weight : "");
      td.setAttribute("data-value", String(p.depth));
    });
    var age = p.hb == null ? (p.hbInterval === 0 ? "untracked" : "never") : fmtAge(p.hbAge);
    var late = p.hbAge != null && p.hbInterval > 0 && p.hbAge > p.hbInterval * 1.5;
    put(tr, 7, age + (late ? "!" : ""), function (td) {
      td.textContent = age;
      td.className = "c-num c-hb" + (late ? " late" : "") + (p.hb == null ? " never" : "");
      td.title = p.hb == null ? "no heartbeat received yet"
        : "last heartbeat " + new Date(p.hb).toLocaleString() +
          (p.hbInterval ? " · expected every " + fmtAge(p.hbInterval) : "");
      td.setAttribute("data-value", p.hbAge == null ? "" : String(p.hbAge));
    });
  }

  function renderTable() {
    if (state.viewDirty || !state.view) computeView();
    var v = state.view;
    var total = state.procs.length;
    var empty = $("#proc-empty");
    empty.hidden = v.length > 0;
    setText(empty, total ? "No processor matches the filter." : "No processors registered.");
    setText(tid("proc-summary"),
      total ? "· " + fmtInt(total) + (v.length !== total ? " · showing " + fmtInt(v.length) : "") : "");

    var h = rowH || 37;
    var headH = procScroll.querySelector("thead").offsetHeight || 36;
    var viewH = Math.max(procScroll.clientHeight - headH, h * 8);
    var scrollTop = Math.max(0, procScroll.scrollTop);
    var first = Math.max(0, Math.floor(scrollTop / h) - OVERSCAN);
    var last = Math.min(v.length, Math.ceil((scrollTop + viewH) / h) + OVERSCAN);

    var wanted = [topSpacer];
    var keep = new Map();
    for (var i = first; i < last; i++) {
      var p = v[i];
      var tr = rowCache.get(p.id) || makeRow(p.id);
      updateRow(tr, p);
      keep.set(p.id, tr);
      wanted.push(tr);
    }
    wanted.push(bottomSpacer);
    rowCache = keep;

    // Move only what is out of place.
    var node = procBody.firstChild;
    for (var j = 0; j < wanted.length; j++) {
      if (node !== wanted[j]) procBody.insertBefore(wanted[j], node);
      else node = node.nextSibling;
    }
    while (bottomSpacer.nextSibling) procBody.removeChild(bottomSpacer.nextSibling);

    topSpacer.style.height = first * h + "px";
    bottomSpacer.style.height = (v.length - last) * h + "px";
    topSpacer.hidden = first === 0;
    bottomSpacer.hidden = last >= v.length;
    if (!rowH && wanted.length > 2) {
      var measured = wanted[1].getBoundingClientRect().height;
      if (measured > 0) rowH = measured;
    }
  }

  procScroll.addEventListener("scroll", function () { scheduleRender(); }, { passive: true });

  document.querySelectorAll(".procs thead th").forEach(function (th) {
    var btn = th.querySelector("button");
    var full = btn.querySelector(".lbl-full");
    btn.setAttribute("aria-label", "Sort by " + (full ? full.textContent : btn.textContent).toLowerCase());
    btn.addEventListener("click", function () {
      var key = th.getAttribute("data-key");
      if (state.sort.key === key) state.sort.dir = -state.sort.dir;
      else {
        state.sort.key = key;
        // Numbers read best largest first; names and the status (worst first) ascending.
        state.sort.dir = /^(rate|frames_routed|queue|heartbeat)$/.test(key) ? -1 : 1;
      }
      document.querySelectorAll(".procs thead th").forEach(function (o) {
        o.setAttribute("aria-sort", o === th ? (state.sort.dir > 0 ? "ascending" : "descending") : "none");
      });
      state.viewDirty = true;
      scheduleRender();
    });
  });

  var filterInput = tid("proc-filter");
  filterInput.addEventListener("input", function () {
    state.filterText = filterInput.value.trim();
    state.viewDirty = true;
    procScroll.scrollTop = 0;
    scheduleRender();
  });
  tid("status-filter").addEventListener("click", function (e) {
    var b = e.target.closest("button");
    if (!b) return;
    state.filterStatus = b.getAttribute("data-status");
    this.querySelectorAll("button").forEach(function (o) {
      o.setAttribute("aria-pressed", o === b ? "true" : "false");
    });
    state.viewDirty = true;
    procScroll.scrollTop = 0;
    scheduleRender();
  });

  // -------------------------------------------------------------- scope

  /* The snapshot's totals over the fleet, or null when the gateway sends none. */
  function fleetOf(s) {
    var f = s && s.fleet;
    return f && typeof f === "object" && num(f.in_per_s) != null ? f : null;
  }

  /* The snapshot's replicas (sorted by consumer name by the gateway). */
  function replicasOf(s) {
    if (!s || !Array.isArray(s.replicas)) return [];
    return s.replicas.filter(function (r) { return r && typeof r === "object" && typeof r.consumer === "string"; });
  }

  /* What the KPIs and the drops table show: the fleet, one replica's entry
   * of `replicas`, or (no fleet view) the serving replica's own figures.
   * asOf: the gateway time the figures are from (the fleet's: its oldest
   * replica's). */
  function scoped(s) {
    var fl = fleetOf(s), reps = replicasOf(s);
    if (fl && state.scope) {
      for (var i = 0; i < reps.length; i++) {
        var r = reps[i];
        if (r.consumer !== state.scope) continue;
        return {
          kind: "replica", name: r.consumer, self: r.self === true,
          in: num(r.in_per_s), out: num(r.out_per_s), consumed: num(r.consumed),
          distributed: num(r.distributed), blocked: num(r.blocked),
          dropped: r.dropped || {}, dlq: r.dlq || {}, moves: r.camera_moves || {},
          lat: r.routing_latency_ms || {}, asOf: num(r.last_seen_ms)
        };
      }
      return {
        kind: "gone", name: state.scope, in: null, out: null, consumed: null, distributed: null,
        blocked: null, dropped: {}, dlq: {}, moves: {}, lat: {}, asOf: null
      };
    }
    if (fl) {
      var asOf = null;
      reps.forEach(function (r) {
        var t = num(r.last_seen_ms);
        if (t != null && (asOf == null || t < asOf)) asOf = t;
      });
      return {
        kind: "fleet", name: "", in: num(fl.in_per_s), out: num(fl.out_per_s), consumed: num(fl.consumed),
        distributed: num(fl.distributed), blocked: num(fl.blocked), dropped: fl.dropped || {}, dlq: fl.dlq || {},
        moves: fl.camera_moves || {},
        lat: fl.routing_latency_ms || {}, asOf: asOf != null ? asOf : num(s.now_ms), replicas: num(fl.replicas)
      };
    }
    var f = s.frames || {};
    return {
      kind: "self", name: String(s.consumer || ""), in: num(f.in_per_s), out: num(f.out_per_s),
      consumed: num(f.consumed), distributed: num(f.distributed), blocked: num(f.blocked),
      dropped: s.dropped || {}, dlq: s.dlq || {}, moves: s.camera_moves || {},
      lat: s.routing_latency_ms || {}, asOf: num(s.now_ms)
    };
  }

  function setScope(name) {
    name = name || "";
    if (state.scope === name) return;
    state.scope = name;
    storageSet("sessionStorage", "fb-scope", name);
    state.dropWin = [];
    state.dropKey = null;
    if (state.snap) trackDrops(scoped(state.snap), num(state.snap.now_ms) || Date.now());
    scheduleRender();
  }

  var scopeBar = tid("scope-bar");
  var scopeSelect = tid("scope-select");
  var kpisEl = tid("kpis");
  scopeSelect.addEventListener("change", function () { setScope(scopeSelect.value); });

  function renderScope(s, sc) {
    var fl = fleetOf(s), reps = replicasOf(s);
    scopeBar.hidden = !fl;
    tid("replica-count-wrap").hidden = !fl;
    tid("proc-scope").hidden = !fl;
    tid("conns-label").hidden = !fl;
    setText(tid("chart-scope"), fl ? "whole fleet" : "this replica");
    var nrep = fl ? num(fl.replicas) : null;
    if (nrep == null && fl) nrep = reps.length;
    show(tid("replica-count"), nrep, nrep == null ? "—" : fmtInt(nrep) + (nrep === 1 ? " replica" : " replicas"));

    var pick = sc.kind === "replica" || sc.kind === "gone" ? sc.name : "";
    if (kpisEl.getAttribute("data-scope") !== pick) kpisEl.setAttribute("data-scope", pick);
    if (kpisEl.getAttribute("data-scope-kind") !== sc.kind) kpisEl.setAttribute("data-scope-kind", sc.kind);
    var asOf = sc.asOf == null ? "" : String(sc.asOf);
    if (kpisEl.getAttribute("data-as-of") !== asOf) kpisEl.setAttribute("data-as-of", asOf);
    setText(tid("reasons-scope"), sc.kind === "fleet" ? " · whole fleet" : pick ? " · " + pick : "");
    if (!fl) return;

    // The selector: the fleet, then every live replica (and a picked one
    // that has gone, so the choice stays visible).
    var opts = [["", "Whole fleet · " + fmtInt(nrep) + (nrep === 1 ? " replica" : " replicas")]];
    reps.forEach(function (r) { opts.push([r.consumer, r.consumer + (r.self ? " · this page" : "")]); });
    if (sc.kind === "gone") opts.push([sc.name, sc.name + " · gone"]);
    var want = opts.map(function (o) { return o[0] + "\t" + o[1]; }).join("\n");
    if (scopeSelect._key !== want) {
      scopeSelect._key = want;
      scopeSelect.textContent = "";
      opts.forEach(function (o) { var e = el("option", "", o[1]); e.value = o[0]; scopeSelect.appendChild(e); });
    }
    if (scopeSelect.value !== pick) scopeSelect.value = pick;

    scopeBar.setAttribute("data-scope", pick);
    scopeBar.classList.toggle("picked", !!pick);
    scopeBar.classList.toggle("gone", sc.kind === "gone");
    var now = num(s.now_ms);
    var age = sc.asOf != null && now != null ? " · as of " + fmtAge(now - sc.asOf) + " ago" : "";
    if (sc.kind === "fleet") {
      setText(tid("scope-label"), "Whole fleet");
      setText(tid("scope-note"), "totals over " + fmtInt(nrep) + " live " + (nrep === 1 ? "replica" : "replicas") + age);
    } else if (sc.kind === "replica") {
      setText(tid("scope-label"), "Replica " + sc.name + (sc.self ? " (this page)" : ""));
      setText(tid("scope-note"), "its own figures" + age + " · the chart and the processor table show the whole fleet");
    } else {
      setText(tid("scope-label"), "Replica " + sc.name);
      setText(tid("scope-note"), "not live any more: it stopped publishing its figures · pick the fleet or another replica");
    }
  }

  // ------------------------------------------------------------ replicas

  var replicasCard = tid("replicas-card");
  var replicaBody = $("#replica-body");
  var replicaTotal = $("#replica-total");
  var replicaRows = new Map(); // consumer -> tr
  var RCOLS = ["r-name", "r-ver", "r-up", "r-conn", "c-num r-in", "c-num r-out", "c-num r-cons", "c-num r-p99", "c-num r-seen"];

  function makeReplicaRow(name) {
    var tr = el("tr");
    tr.setAttribute("data-testid", "replica-row");
    tr.setAttribute("data-consumer", name);
    tr._cells = RCOLS.map(function (c) { var td = el("td", c); tr.appendChild(td); return td; });
    var b = el("button", "rsel");
    b.type = "button";
    b.setAttribute("data-consumer", name);
    b.appendChild(el("span", "rname", name));
    tr._self = el("span", "self-tag", "this page");
    tr._self.setAttribute("data-testid", "replica-self");
    tr._self.hidden = true;
    b.appendChild(tr._self);
    tr._cells[0].appendChild(b);
    ["replica-name", "replica-version", "replica-uptime", "replica-conns", "replica-in", "replica-out",
      "replica-consumed", "replica-p99", "replica-seen"].forEach(function (t, i) { tr._cells[i].setAttribute("data-testid", t); });
    ["redis", "group", "nats"].forEach(function (k) {
      var c = el("span", "cb", k);
      c.setAttribute("data-conn", k);
      tr._cells[3].appendChild(c);
    });
    return tr;
  }

  function connBadge(c, v) {
    var val = v === true ? "true" : v === false ? "false" : "off";
    if (c.getAttribute("data-up") !== val) {
      c.setAttribute("data-up", val);
      c.title = c.getAttribute("data-conn") + (val === "true" ? ": connected" : val === "false" ? ": down" : ": not used");
    }
  }

  function renderReplicas(s) {
    var fl = fleetOf(s), reps = replicasOf(s);
    replicasCard.hidden = !fl;
    if (!fl) return;
    var now = num(s.now_ms);
    var myVersion = null;
    reps.forEach(function (r) { if (r.self) myVersion = r.version; });
    setText(tid("replica-summary"), "· " + fmtInt(reps.length) + " live");
    var keep = new Map();
    var node = replicaBody.firstChild;
    reps.forEach(function (r) {
      var tr = replicaRows.get(r.consumer) || makeReplicaRow(r.consumer);
      keep.set(r.consumer, tr);
      if (node !== tr) replicaBody.insertBefore(tr, node);
      else node = node.nextSibling;
      var c = tr._cells;
      var self = r.self === true;
      if (tr.getAttribute("data-self") !== String(self)) {
        tr.setAttribute("data-self", String(self));
        tr._self.hidden = !self;
        tr.classList.toggle("self", self);
      }
      var sel = state.scope === r.consumer;
      if (tr.getAttribute("aria-selected") !== String(sel)) tr.setAttribute("aria-selected", String(sel));
      var ver = r.version == null ? "—" : String(r.version);
      setText(c[1], ver);
      c[1].classList.toggle("diff", myVersion != null && r.version !== myVersion);
      c[1].title = c[1].classList.contains("diff") ? "not the version of the replica serving this page" : "";
      show(c[2], r.uptime_s, fmtUptime(num(r.uptime_s)));
      var cn = r.connections || {};
      var bs = c[3].children;
      connBadge(bs[0], cn.redis);
      connBadge(bs[1], cn.group);
      connBadge(bs[2], cn.nats === "disabled" ? null : cn.nats);
      show(c[4], r.in_per_s, fmtRate(num(r.in_per_s)));
      show(c[5], r.out_per_s, fmtRate(num(r.out_per_s)));
      show(c[6], r.consumed, fmtInt(num(r.consumed)));
      var p99 = r.routing_latency_ms ? num(r.routing_latency_ms.p99) : null;
      show(c[7], p99, fmtMs(p99));
      var seen = num(r.last_seen_ms);
      var age = seen != null && now != null ? Math.max(0, now - seen) : num(r.age_ms);
      show(c[8], seen, age == null ? "—" : fmtAge(age) + " ago");
      c[8].classList.toggle("late", age != null && age > 3000);
      c[8].title = seen == null ? "" : "figures published " + new Date(seen).toLocaleString();
    });
    replicaRows.forEach(function (tr, name) { if (!keep.has(name)) tr.remove(); });
    replicaRows = keep;

    var t = replicaTotal.children;
    setText(t[0].firstChild, "Whole fleet");
    replicaTotal.setAttribute("aria-selected", String(!state.scope));
    show(t[4], fl.in_per_s, fmtRate(num(fl.in_per_s)));
    show(t[5], fl.out_per_s, fmtRate(num(fl.out_per_s)));
    show(t[6], fl.consumed, fmtInt(num(fl.consumed)));
    var fp99 = fl.routing_latency_ms ? num(fl.routing_latency_ms.p99) : null;
    show(t[7], fp99, fmtMs(fp99));
  }

  tid("replica-table").addEventListener("click", function (e) {
    var tr = e.target.closest("tr");
    if (!tr || !tr.parentNode || tr.parentNode.tagName === "THEAD") return;
    var name = tr.id === "replica-total" ? "" : tr.getAttribute("data-consumer") || "";
    // A second click on the picked replica goes back to the fleet.
    setScope(name && name === state.scope ? "" : name);
  });

  // --------------------------------------------------------- KPI, drops

  function trackDrops(sc, t) {
    var key = sc.kind + ":" + sc.name;
    if (state.dropKey !== key) {
      state.dropWin = [];
      state.dropKey = key;
    }
    var w = state.dropWin;
    w.push({ t: t, dropped: sc.dropped || {}, dlq: sc.dlq || {}, moves: sc.moves || {} });
    while (w.length > 2 && w[0].t < t - 60000) w.shift();
  }

  var REASONS = ["malformed", "no_processor", "expired", "overloaded", "poison", "missing", "trimmed"];

  /* The tab's title says what needs attention, for a dashboard left in a
   * background tab. */
  function updateTitle() {
    var dead = state.snap && state.snap.processor_counts ? state.snap.processor_counts.dead || 0 : 0;
    var t = state.conn === "disconnected" ? "Disconnected · frame-buffer"
      : dead ? dead + " dead · frame-buffer" : "frame-buffer · live routing";
    if (document.title !== t) document.title = t;
  }

  function sum(o) {
    var t = 0;
    if (o) for (var k in o) if (num(o[k]) != null) t += o[k];
    return t;
  }


  /* Per-second growth of a counter over the last `span` ms (10 s by
   * default; null: not enough data). */
  function growth(kind, reason, span) {
    var w = state.dropWin;
    if (w.length < 2) return null;
    var b = w[w.length - 1], a = w[0];
    for (var i = 0; i < w.length - 1 && w[i].t < b.t - (span || 10000); i++) a = w[i + 1];
    var dt = (b.t - a.t) / 1000;
    if (dt < 1) return null;
    var x = reason ? (a[kind][reason] || 0) : sum(a[kind]);
    var y = reason ? (b[kind][reason] || 0) : sum(b[kind]);
    return Math.max(0, y - x) / dt;
  }

  var reasonsBody = $("#reasons-body");
  var reasonRows = new Map();

  function renderReasons(sc) {
    var dropped = sc.dropped || {}, dlq = sc.dlq || {};
    var names = REASONS.slice();
    Object.keys(dropped).concat(Object.keys(dlq)).forEach(function (k) {
      if (names.indexOf(k) < 0) names.push(k);
    });
    names.forEach(function (name) {
      var row = reasonRows.get(name);
      if (!row) {
        row = el("tr");
        row.setAttribute("data-testid", "reason-" + name);
        row.appendChild(el("td", "", name));
        row.appendChild(el("td", "c-num"));
        row.appendChild(el("td", "c-num"));
        reasonsBody.appendChild(row);
        reasonRows.set(name, row);
      }
      var d = num(dropped[name]), q = num(dlq[name]);
      var dr = growth("dropped", name), qr = growth("dlq", name);
      cell(row.children[1], d, dr);
      cell(row.children[2], q, qr);
      var nz = (d || 0) + (q || 0) > 0;
      row.className = nz ? "nz" : "zero";
    });
  }

  function cell(td, v, rate) {
    var text = v == null ? "–" : fmtInt(v);
    var r = rate && rate >= 0.05 ? "+" + fmtRate(rate) + "/s" : "";
    var key = text + "|" + r;
    if (td._key === key) return;
    td._key = key;
    td.textContent = text;
    td.classList.toggle("nzc", !!v);
    td.setAttribute("data-value", v == null ? "" : String(v));
    if (r) td.appendChild(el("span", "delta", r));
  }

  /* sc: what scoped(s) says the figures are (the fleet, one replica, or
   * this replica without a fleet view). */
  function renderKpis(s, sc) {
    var f = s.frames || {};
    var lat = sc.lat || {};
    show(tid("frames-in"), sc.in, fmtRate(sc.in));
    show(tid("frames-out"), sc.out, fmtRate(sc.out));
    show(tid("frames-consumed"), sc.consumed, fmtInt(sc.consumed));
    show(tid("frames-distributed"), sc.distributed, fmtInt(sc.distributed));
    // The lag and the pending count are the consumer group's: one figure
    // for every replica, whatever the scope.
    show(tid("consumer-lag"), f.consumer_lag, fmtInt(f.consumer_lag));
    show(tid("frames-pending"), f.pending, fmtInt(f.pending));
    var fl = fleetOf(s);
    tid("consumer-lag").classList.toggle("warn",
      (f.consumer_lag || 0) > Math.max(1000, 2 * ((fl ? fl.in_per_s : f.in_per_s) || 0)));
    tid("blocked").hidden = !sc.blocked;
    show(tid("latency-p50"), lat.p50, fmtMs(lat.p50));
    show(tid("latency-p99"), lat.p99, fmtMs(lat.p99));
    show(tid("latency-mean"), lat.mean, fmtMs(lat.mean));

    var c = s.processor_counts || {};
    ["healthy", "stale", "dead"].forEach(function (k) {
      var e = tid("count-" + k);
      show(e, c[k], fmtInt(c[k] || 0));
      e.parentNode.classList.toggle("zero", !c[k]);
    });

    var gone = sc.kind === "gone";
    var dt = gone ? null : sum(sc.dropped), qt = gone ? null : sum(sc.dlq);
    show(tid("dropped-total"), dt, fmtInt(dt));
    show(tid("dlq-total"), qt, fmtInt(qt));
    tid("dropped-total").classList.toggle("bad", dt > 0);
    tid("dlq-total").classList.toggle("bad", qt > 0);
    var gr = (growth("dropped") || 0) + (growth("dlq") || 0);
    setText(tid("drop-hint"), gr >= 0.05 ? "rising: +" + fmtRate(gr) + "/s" : "since start");
    tid("drop-hint").classList.toggle("bad", gr >= 0.05);

    setText(tid("uptime"), fmtUptime(s.uptime_s));
    updateTitle();
    if (s.consumer) setText(tid("consumer"), s.consumer);
    document.body.setAttribute("data-now-ms", String(s.now_ms));

    var r = s.routing || {};
    setText(tid("frame-max-age"), r.frame_max_age_ms ? fmtInt(r.frame_max_age_ms) + " ms" : "off");
    setText(tid("slow-start"), num(r.slow_start_ms) == null ? "—" : r.slow_start_ms ? fmtInt(r.slow_start_ms) + " ms" : "off");
    setText(tid("hash-bound"), num(r.hash_bound) == null ? "—" : "×" + (+r.hash_bound).toFixed(2));
    var mv = sc.moves || {}, perMin = growth("moves", null, 60000);
    var moves = tid("camera-moves");
    setText(moves, perMin == null ? fmtInt(sum(mv)) + " since start"
      : fmtInt(Math.round(perMin * 60)) + "/min (" + ["spill", "return", "membership"].map(function (k) {
        return fmtInt(mv[k] || 0);
      }).join(" · ") + " since start)");
    moves.setAttribute("data-value", String(sum(mv)));
    setText(tid("max-deliveries"), fmtInt(r.max_deliveries));
    setText(tid("batch-size"), fmtInt(r.batch_size));

    var cn = s.connections || {};
    setUp("conn-redis", cn.redis);
    setUp("conn-group", cn.group);
    setUp("conn-nats", cn.nats);
  }

  function setUp(name, v) {
    var e = tid(name);
    var val = v === true ? "true" : v === false ? "false" : "off";
    // A gateway run with NATS_URL=none reports nats:false: say "off", not "down".
    if (name === "conn-nats" && v === false && state.natsOff) val = "off";
    if (e.getAttribute("data-up") !== val) e.setAttribute("data-up", val);
    e.title = name.slice(5) + (val === "true" ? ": connected" : val === "false" ? ": down" : ": not used");
  }

  // ------------------------------------------------------------ routing

  /* The settings the page can change, each a <select> filled from the list
   * the gateway gives in routing (strategies, overload_policies). */
  var FIELDS = [
    { key: "strategy", list: "strategies", sel: tid("strategy-select") },
    { key: "overload_policy", list: "overload_policies", sel: tid("overload-select") }
  ];
  var applyBtn = tid("strategy-apply");
  var resetBtn = tid("routing-reset");
  /* The settings the fleet stores (GET /api/v1/routing's "source"). */
  var SOURCE_KEYS = ["strategy", "overload_policy", "frame_max_age_ms", "slow_start_ms", "hash_bound"];
  var tokenInput = tid("api-token");
  var formMsg = tid("strategy-msg");
  var routingBusy = false;
  var appliedAt = 0; // local time of the last successful PUT

  tokenInput.value = storageGet("sessionStorage", "fb-api-token") || "";
  tokenInput.addEventListener("input", function () {
    storageSet("sessionStorage", "fb-api-token", tokenInput.value.trim());
  });

  function routingFromSnapshot(r) {
    // A snapshot that left the gateway before our PUT was answered would
    // undo what the operator sees for a moment: trust the PUT's answer first.
    if (!r || performance.now() - appliedAt < 800) return;
    takeRouting(r);
  }

  /* The routing settings as GET /api/v1/routing (or the snapshot) gives them. */
  function takeRouting(r) {
    FIELDS.forEach(function (f) {
      if (typeof r[f.key] === "string") state.current[f.key] = r[f.key];
      if (Array.isArray(r[f.list])) state.options[f.key] = r[f.list].map(String);
    });
    state.source = r.source && typeof r.source === "object" ? r.source : null;
    state.routingMeta = {
      generation: num(r.generation),
      updatedBy: typeof r.updated_by === "string" ? r.updated_by : null,
      requestId: typeof r.request_id === "string" ? r.request_id : null,
      updatedAt: num(r.updated_at_ms)
    };
  }

  /* Where each setting comes from: the fleet's stored set or the replica's
   * configuration; and who changed the stored set last. */
  function renderSources() {
    var src = state.source;
    var anyFleet = false;
    SOURCE_KEYS.forEach(function (k) {
      var e = tid("src-" + k);
      var v = src && (src[k] === "fleet" || src[k] === "config") ? src[k] : "";
      if (v === "fleet") anyFleet = true;
      e.hidden = !v;
      if (e.getAttribute("data-src") !== v) {
        e.setAttribute("data-src", v);
        e.textContent = v;
        e.title = v === "fleet" ? "set for the whole fleet (stored in Redis)" : "this replica's configured value";
      }
    });
    tid("src-max_deliveries").hidden = !src;
    tid("src-batch_size").hidden = !src;
    tid("routing-scope").hidden = !src;
    resetBtn.hidden = !src;
    resetBtn.disabled = routingBusy || !anyFleet;
    resetBtn.title = anyFleet
      ? "Remove the fleet's stored settings: every replica goes back to its configured values"
      : "Nothing to reset: every setting is the configured one";
    var origin = tid("routing-origin");
    origin.hidden = !src;
    if (!src) return;
    var m = state.routingMeta || {};
    var now = state.snap && num(state.snap.now_ms) != null ? state.snap.now_ms : Date.now();
    var last = m.updatedBy
      ? "by " + m.updatedBy + (m.updatedAt != null ? " " + fmtAge(now - m.updatedAt) + " ago" : "")
      : "";
    setText(origin, anyFleet
      ? "Stored for the fleet" + (last ? " " + last : "") + (m.generation != null ? " · generation " + m.generation : "")
      : "Every replica uses its configured values" + (last ? " · last change " + last : ""));
    var title = m.requestId ? "request " + m.requestId : "";
    if (origin.title !== title) origin.title = title;
    origin.setAttribute("data-request-id", m.requestId || "");
  }

  function syncOptions(f) {
    var want = (state.options[f.key] || []).slice();
    var cur = state.current[f.key];
    if (cur && want.indexOf(cur) < 0) want.push(cur);
    if (!want.length) return;
    var have = Array.prototype.map.call(f.sel.options, function (o) { return o.value; });
    if (have.join("\n") === want.join("\n")) return;
    var keep = f.sel.value;
    f.sel.textContent = "";
    want.forEach(function (v) { var o = el("option", "", v); o.value = v; f.sel.appendChild(o); });
    if (want.indexOf(keep) >= 0) f.sel.value = keep;
  }

  function renderRouting() {
    var changed = false;
    FIELDS.forEach(function (f) {
      var cur = state.current[f.key];
      if (!cur) return;
      syncOptions(f);
      if (state.dirty[f.key] && f.sel.value === cur) state.dirty[f.key] = false;
      if (!state.dirty[f.key] && f.sel.value !== cur && document.activeElement !== f.sel) f.sel.value = cur;
      if (f.sel.value !== cur) changed = true;
      f.sel.classList.toggle("changed", f.sel.value !== cur);
    });
    applyBtn.disabled = routingBusy || !changed;
    setText(tid("strategy-current"), state.current.strategy || "—");
    setText(tid("overload-policy"), state.current.overload_policy || "—");
    renderSources();
  }

  FIELDS.forEach(function (f) {
    f.sel.addEventListener("change", function () {
      state.dirty[f.key] = f.sel.value !== state.current[f.key];
      setMsg("", "");
      renderRouting();
    });
  });

  function setMsg(text, kind) {
    formMsg.textContent = text;
    formMsg.className = "form-msg" + (kind ? " " + kind : "");
  }

  /* PUT (body: the changes) or DELETE /api/v1/routing with the token when
   * one is given; done(answer) on success, the gateway's own words if not. */
  function sendRouting(method, body, done) {
    var headers = {};
    if (body) headers["Content-Type"] = "application/json";
    var token = tokenInput.value.trim();
    if (token) headers.Authorization = "Bearer " + token;
    routingBusy = true;
    renderRouting();
    setMsg(method === "DELETE" ? "Resetting…" : "Applying…", "");
    fetch("/api/v1/routing", { method: method, headers: headers, body: body ? JSON.stringify(body) : undefined })
      .then(function (r) {
        return r.text().then(function (text) {
          var j = null;
          try { j = JSON.parse(text); } catch (err) { /* not JSON */ }
          if (r.ok) {
            appliedAt = performance.now();
            if (j && typeof j === "object") takeRouting(j);
            done(j);
          } else {
            var detail = j && j.detail ? (typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail)) : text || r.statusText;
            setMsg(r.status + ": " + detail, "err");
            if (r.status === 401) {
              var row = $("#token-row");
              row.dataset.forced = "1";
              row.hidden = false;
              tokenInput.focus();
            }
          }
        });
      })
      .catch(function (err) {
        setMsg("Could not reach the gateway: " + (err && err.message ? err.message : err), "err");
      })
      .then(function () {
        routingBusy = false;
        renderRouting();
      });
  }

  $("#strategy-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var body = {};
    FIELDS.forEach(function (f) {
      if (f.sel.value !== state.current[f.key]) body[f.key] = f.sel.value;
    });
    var keys = Object.keys(body);
    if (!keys.length) return;
    sendRouting("PUT", body, function (j) {
      FIELDS.forEach(function (f) {
        if (!(j && typeof j[f.key] === "string") && body[f.key]) state.current[f.key] = body[f.key];
        state.dirty[f.key] = false;
      });
      setMsg(keys.map(function (k) { return (k === "strategy" ? "Strategy" : "Overload policy") + " is now " + state.current[k]; }).join("; ") +
        (state.source ? " for the whole fleet." : "."), "ok");
    });
  });

  resetBtn.addEventListener("click", function () {
    sendRouting("DELETE", null, function () {
      FIELDS.forEach(function (f) { state.dirty[f.key] = false; });
      setMsg("Reset: every replica is back to its configured settings (here: strategy " +
        (state.current.strategy || "—") + ", overload policy " + (state.current.overload_policy || "—") + ").", "ok");
    });
  });

  // ---------------------------------------------------------- event log

  var logEl = tid("event-log");

  function eventLine(e) {
    var li = el("li");
    li.setAttribute("data-testid", "event");
    li.setAttribute("data-event", String(e.event || ""));
    if (e.processor_id) li.setAttribute("data-processor", String(e.processor_id));
    if (e.status) li.setAttribute("data-status", String(e.status));
    var replica = typeof e.replica === "string" && e.replica ? e.replica : "";
    var requestId = typeof e.request_id === "string" && e.request_id ? e.request_id : "";
    if (replica) li.setAttribute("data-replica", replica);
    if (requestId) li.setAttribute("data-request-id", requestId);
    if (replica || requestId) {
      li.title = (replica ? "on replica " + replica : "") + (replica && requestId ? " · " : "") +
        (requestId ? "caused by request " + requestId : "");
    }
    var at = num(e.at) || Date.now();
    var time = el("time", "", fmtClock(at));
    time.dateTime = new Date(at).toISOString();
    time.title = new Date(at).toLocaleString();
    li.appendChild(time);
    var kind = String(e.event || "event");
    li.appendChild(el("span", "ev " + kind + (e.status ? " " + e.status : ""), kind));
    var msg = el("span", "msg");
    if (replica) {
      var rep = el("span", "rep", replica);
      rep.setAttribute("data-testid", "event-replica");
      if (replica === state.self) {
        rep.classList.add("self");
        rep.title = "the replica serving this page";
      }
      msg.appendChild(rep);
    }
    if (e.processor_id) {
      msg.appendChild(el("code", "", String(e.processor_id)));
      if (e.status) msg.appendChild(document.createTextNode(" → " + e.status));
    } else if (e.status) {
      msg.appendChild(el("code", "", String(e.status)));
    }
    if (e.detail) msg.appendChild(el("span", "muted", (msg.querySelector("code") ? " · " : "") + e.detail));
    li.appendChild(msg);
    return li;
  }

  function renderLog() {
    logEl.textContent = "";
    if (!state.events.length) {
      logEl.appendChild(el("li", "empty-li", "No events yet. Registrations, health changes and routing changes on every replica appear here as they happen."));
    } else {
      var frag = document.createDocumentFragment();
      state.events.forEach(function (e) { frag.appendChild(eventLine(e)); });
      logEl.appendChild(frag);
    }
    setText(tid("event-count"), state.events.length ? "· " + state.events.length : "");
  }

  function prependLog(e) {
    var placeholder = logEl.querySelector(".empty-li");
    if (placeholder) placeholder.remove();
    var li = eventLine(e);
    li.classList.add("new");
    logEl.insertBefore(li, logEl.firstChild);
    while (logEl.children.length > MAX_EVENTS) logEl.removeChild(logEl.lastChild);
    setText(tid("event-count"), "· " + state.events.length);
  }

  $("#log-pause").addEventListener("change", function () {
    state.logPaused = this.checked;
    if (!state.logPaused) renderLog();
  });

  // --------------------------------------------------------------- chart

  var canvas = $("#chart");
  var tip = $("#chart-tip");
  var hoverX = null;

  function cssVar(name) { return getComputedStyle(root).getPropertyValue(name).trim(); }

  function niceMax(v) {
    if (v <= 0) return 10;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }

  function drawChart() {
    var rect = canvas.getBoundingClientRect();
    var dpr = window.devicePixelRatio || 1;
    var W = Math.max(1, Math.round(rect.width)), H = Math.max(1, Math.round(rect.height));
    if (canvas.width !== W * dpr || canvas.height !== H * dpr) {
      canvas.width = W * dpr;
      canvas.height = H * dpr;
    }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);

    var colIn = cssVar("--in"), colOut = cssVar("--out");
    var grid = cssVar("--grid"), muted = cssVar("--muted"), faint = cssVar("--faint");
    var font = "11px " + cssVar("--sans");

    var h = state.history;
    var tEnd = state.snap && num(state.snap.now_ms) ? state.snap.now_ms : (h.length ? h[h.length - 1].t : Date.now());
    // Five minutes once there are five minutes to show; until then the
    // whole history, in whole minutes, so a young gateway's line is not a
    // sliver at the right edge.
    var firstT = tEnd;
    for (var f = 0; f < h.length; f++) if (h[f].t >= tEnd - HISTORY_MS) { firstT = h[f].t; break; }
    var span = Math.min(HISTORY_MS, Math.max(60000, Math.ceil((tEnd - firstT) / 60000) * 60000));
    var tStart = tEnd - span;
    setText(tid("chart-span"), span >= 120000 ? "last " + span / 60000 + " minutes" : "last minute");
    var maxV = 0;
    for (var i = 0; i < h.length; i++) {
      if (h[i].t < tStart) continue;
      if (h[i].in > maxV) maxV = h[i].in;
      if (h[i].out > maxV) maxV = h[i].out;
    }
    var yMax = niceMax(maxV * 1.08);

    ctx.font = font;
    var yLabelW = Math.max(ctx.measureText(nfInt.format(yMax)).width, 16) + 10;
    var padL = yLabelW, padR = 8, padT = 8, padB = 22;
    var cw = W - padL - padR, ch = H - padT - padB;
    if (cw < 20 || ch < 20) return;
    function X(t) { return padL + (t - tStart) / span * cw; }
    function Y(v) { return padT + ch - v / yMax * ch; }

    // Grid and axes.
    ctx.lineWidth = 1;
    ctx.strokeStyle = grid;
    ctx.fillStyle = muted;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    var ticks = 4;
    for (var k = 0; k <= ticks; k++) {
      var v = yMax * k / ticks;
      var y = Math.round(Y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(padL, y);
      ctx.lineTo(W - padR, y);
      ctx.stroke();
      ctx.fillText(v >= 10 || v === 0 ? nfInt.format(v) : nf1.format(v), padL - 6, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    ctx.fillStyle = faint;
    var step = [10000, 15000, 20000, 30000, 60000].filter(function (st) { return span / st <= 6; })[0] || 60000;
    var nTicks = Math.round(span / step);
    var short = cw / nTicks < 56;
    for (var m = nTicks; m >= 0; m--) {
      var ago = m * step;
      var tx = X(tEnd - ago);
      var label = ago === 0 ? "now" : ago % 60000 === 0 ? "−" + ago / 60000 + (short ? "m" : " min") : "−" + ago / 1000 + (short ? "s" : " s");
      ctx.fillText(label, Math.min(Math.max(tx, padL + 18), W - padR - 14), padT + ch + 6);
      if (m > 0 && m < nTicks) {
        ctx.strokeStyle = grid;
        ctx.beginPath();
        ctx.moveTo(Math.round(tx) + 0.5, padT);
        ctx.lineTo(Math.round(tx) + 0.5, padT + ch);
        ctx.stroke();
      }
    }

    // Series: a gap of more than 5 s (no connection) breaks the line.
    function series(key, color, fill) {
      ctx.save();
      ctx.beginPath();
      ctx.rect(padL, padT - 2, cw, ch + 4);
      ctx.clip();
      var segs = [], cur = [];
      for (var i = 0; i < h.length; i++) {
        if (h[i].t < tStart - 2000) continue;
        if (cur.length && h[i].t - cur[cur.length - 1].t > 5000) { segs.push(cur); cur = []; }
        cur.push(h[i]);
      }
      if (cur.length) segs.push(cur);
      segs.forEach(function (s) {
        if (fill && s.length > 1) {
          ctx.beginPath();
          ctx.moveTo(X(s[0].t), Y(0));
          s.forEach(function (p) { ctx.lineTo(X(p.t), Y(p[key])); });
          ctx.lineTo(X(s[s.length - 1].t), Y(0));
          ctx.closePath();
          var g = ctx.createLinearGradient(0, padT, 0, padT + ch);
          g.addColorStop(0, hexAlpha(color, 0.22));
          g.addColorStop(1, hexAlpha(color, 0.02));
          ctx.fillStyle = g;
          ctx.fill();
        }
        ctx.beginPath();
        s.forEach(function (p, j) {
          if (j) ctx.lineTo(X(p.t), Y(p[key]));
          else ctx.moveTo(X(p.t), Y(p[key]));
        });
        ctx.strokeStyle = color;
        ctx.lineWidth = fill ? 2 : 1.75;
        ctx.lineJoin = "round";
        if (!fill) ctx.setLineDash([5, 3]);
        ctx.stroke();
        ctx.setLineDash([]);
        if (s.length === 1) {
          ctx.fillStyle = color;
          ctx.beginPath();
          ctx.arc(X(s[0].t), Y(s[0][key]), 2, 0, Math.PI * 2);
          ctx.fill();
        }
      });
      ctx.restore();
    }
    series("in", colIn, true);
    series("out", colOut, false);

    if (!h.length) {
      ctx.fillStyle = muted;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.font = "13px " + cssVar("--sans");
      ctx.fillText("Waiting for data…", padL + cw / 2, padT + ch / 2);
    }

    // Hover: the nearest second.
    if (hoverX != null && h.length && hoverX >= padL && hoverX <= W - padR) {
      var tHover = tStart + (hoverX - padL) / cw * span;
      var best = null;
      for (var q = 0; q < h.length; q++) {
        if (!best || Math.abs(h[q].t - tHover) < Math.abs(best.t - tHover)) best = h[q];
      }
      if (best && Math.abs(best.t - tHover) < 5000) {
        var bx = Math.round(X(best.t)) + 0.5;
        ctx.strokeStyle = muted;
        ctx.setLineDash([3, 3]);
        ctx.beginPath();
        ctx.moveTo(bx, padT);
        ctx.lineTo(bx, padT + ch);
        ctx.stroke();
        ctx.setLineDash([]);
        [["in", colIn], ["out", colOut]].forEach(function (sv) {
          ctx.fillStyle = sv[1];
          ctx.beginPath();
          ctx.arc(bx, Y(best[sv[0]]), 3.5, 0, Math.PI * 2);
          ctx.fill();
        });
        tip.hidden = false;
        tip.textContent = "";
        tip.appendChild(el("b", "", fmtClock(best.t)));
        tip.appendChild(document.createTextNode("  "));
        tip.appendChild(el("span", "in", "in " + fmtRate(best.in)));
        tip.appendChild(document.createTextNode(" · "));
        tip.appendChild(el("span", "out", "out " + fmtRate(best.out)));
        var tw = tip.offsetWidth;
        tip.style.left = Math.min(Math.max(bx - tw / 2, 0), W - tw) + "px";
        return;
      }
    }
    tip.hidden = true;
  }

  function hexAlpha(color, a) {
    var m = /^#([0-9a-f]{6})$/i.exec(color);
    if (!m) return color;
    var n = parseInt(m[1], 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + a + ")";
  }

  canvas.addEventListener("mousemove", function (e) {
    hoverX = e.clientX - canvas.getBoundingClientRect().left;
    scheduleRender();
  });
  canvas.addEventListener("mouseleave", function () { hoverX = null; scheduleRender(); });
  if (window.ResizeObserver) new ResizeObserver(function () { scheduleRender(); }).observe(canvas);
  else window.addEventListener("resize", scheduleRender);

  // --------------------------------------------------------------- theme

  var darkQuery = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

  function resolvedTheme() {
    var t = root.getAttribute("data-theme");
    if (t === "light" || t === "dark") return t;
    return darkQuery && darkQuery.matches ? "dark" : "light";
  }
  function applyTheme() {
    var t = resolvedTheme();
    root.setAttribute("data-resolved-theme", t);
    var b = tid("theme-toggle");
    var label = "Switch to " + (t === "dark" ? "light" : "dark") + " theme";
    b.setAttribute("aria-label", label);
    b.title = label;
    scheduleRender();
  }
  tid("theme-toggle").addEventListener("click", function () {
    var next = resolvedTheme() === "dark" ? "light" : "dark";
    root.setAttribute("data-theme", next);
    storageSet("localStorage", "fb-theme", next);
    applyTheme();
  });
  if (darkQuery) {
    var onScheme = function () { applyTheme(); };
    if (darkQuery.addEventListener) darkQuery.addEventListener("change", onScheme);
    else if (darkQuery.addListener) darkQuery.addListener(onScheme);
  }
  window.addEventListener("storage", function (e) {
    if (e.key !== "fb-theme") return;
    if (e.newValue === "light" || e.newValue === "dark") root.setAttribute("data-theme", e.newValue);
    else root.removeAttribute("data-theme");
    applyTheme();
  });

  // -------------------------------------------------------------- render

  var renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(render);
  }
  function render() {
    var t0 = performance.now();
    renderQueued = false;
    var s = state.snap;
    if (s) {
      var sc = scoped(s);
      renderScope(s, sc);
      renderKpis(s, sc);
      renderReasons(sc);
      renderReplicas(s);
    }
    renderRouting();
    renderTable();
    drawChart();
    timing(state.perf.render, performance.now() - t0);
  }

  /* The last 100 durations (ms) of handling a snapshot and of a render. */
  function timing(list, ms) {
    list.push(ms);
    if (list.length > 100) list.shift();
  }

  // NATS_URL=none shows in the snapshot as nats:false with a healthy gateway;
  // the readiness endpoint tells "disabled" apart from "down".
  fetch("/readyz").then(function (r) { return r.json(); }).then(function (j) {
    state.natsOff = j && j.checks && j.checks.nats === "disabled";
    scheduleRender();
  }).catch(function () { /* the snapshot still shows what it can */ });

  applyTheme();
  renderLog();
  connect();

  // For tests and curious operators: the page's own view of things.
  window.fbDashboard = {
    state: state,
    reconnect: function () { conn.attempt = 0; connect(); }
  };
})();
