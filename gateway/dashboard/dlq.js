/* The dashboard's dead-letter queue panel: counts by reason (GET
 * /api/v1/dlq/summary), the entries newest first a page at a time (GET
 * /api/v1/dlq with ?reason= and ?after=), and a replay of the chosen reason
 * (POST /api/v1/dlq/replay). Self-contained: it shares only the API token
 * the tab keeps (sessionStorage "fb-api-token") with the rest of the page.
 * Read on load and on Refresh, not on every snapshot: a summary reads the
 * whole stream. */
(function () {
  "use strict";
  var PAGE = 50;
  var REASONS = ["malformed", "no_processor", "expired", "overloaded", "poison"];
  var card = document.querySelector('[data-testid="dlq-card"]');
  if (!card) return;
  function tid(id) { return card.querySelector('[data-testid="' + id + '"]'); }

  var st = {
    reason: "",      // "" = every reason
    cursors: [null], // the `after` of each page seen so far; the last is the current page's
    next: null,
    busy: false
  };
  var reasonsEl = tid("dlq-reasons");
  var body = tid("dlq-body");
  var msg = tid("dlq-msg");
  var tokenEl = tid("dlq-token");
  var replayBtn = tid("dlq-replay");
  var forceEl = tid("dlq-force");

  function token() {
    var t = tokenEl.value.trim();
    if (t) return t;
    try { return (sessionStorage.getItem("fb-api-token") || "").trim(); } catch (e) { return ""; }
  }
  tokenEl.addEventListener("input", function () {
    try { sessionStorage.setItem("fb-api-token", tokenEl.value.trim()); } catch (e) { /* blocked */ }
  });

  function say(text, kind) {
    msg.textContent = text;
    msg.className = "form-msg" + (kind ? " " + kind : "");
  }

  /* fetch with the token; resolves to {ok, status, json, detail}. */
  function call(method, path, payload) {
    var headers = {};
    if (payload) headers["Content-Type"] = "application/json";
    var t = token();
    if (t && method !== "GET") headers.Authorization = "Bearer " + t;
    return fetch(path, { method: method, headers: headers, body: payload ? JSON.stringify(payload) : undefined })
      .then(function (r) {
        return r.text().then(function (text) {
          var j = null;
          try { j = JSON.parse(text); } catch (e) { /* not JSON */ }
          var detail = j && typeof j.detail === "string" ? j.detail : text || r.statusText;
          if (r.status === 401) { tokenEl.hidden = false; tokenEl.focus(); }
          return { ok: r.ok, status: r.status, json: j, detail: detail };
        });
      });
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function fmtWhen(iso) {
    if (typeof iso !== "string" || !iso) return "—";
    var d = new Date(iso);
    if (isNaN(d.getTime())) return iso;
    var p = function (n) { return (n < 10 ? "0" : "") + n; };
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " +
      p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }

  /* The frame's detection type as routing reads it: the field, else
   * metadata.detection_type. */
  function detectionType(f) {
    if (typeof f.detection_type === "string") return f.detection_type;
    try {
      var m = JSON.parse(f.metadata);
      return m && typeof m.detection_type === "string" ? m.detection_type : "";
    } catch (e) { return ""; }
  }

  /* The reason buttons, with the summary's counts. */
  function renderReasons(sum) {
    var counts = {};
    var total = sum && typeof sum.total === "number" ? sum.total : null;
    REASONS.forEach(function (r) {
      var c = sum && sum.reasons && sum.reasons[r];
      counts[r] = c && typeof c.count === "number" ? c.count : null;
    });
    reasonsEl.textContent = "";
    [""].concat(REASONS).forEach(function (r) {
      var b = el("button");
      b.type = "button";
      b.setAttribute("data-reason", r);
      b.setAttribute("aria-pressed", String(st.reason === r));
      var n = r ? counts[r] : total;
      b.textContent = (r || "All") + (n != null ? " · " + n : "");
      b.setAttribute("data-count", n != null ? String(n) : "");
      reasonsEl.appendChild(b);
    });
    tid("dlq-total-entries").textContent = total != null ? "· " + total + " entries" +
      (sum.complete === false ? " (more than counted)" : "") : "";
  }

  function renderEntries(entries) {
    body.textContent = "";
    entries.forEach(function (e) {
      var f = e.fields || {};
      var tr = el("tr");
      tr.setAttribute("data-testid", "dlq-row");
      tr.setAttribute("data-id", e.id);
      tr.setAttribute("data-reason", e.dlq_reason || "");
      var when = el("td", "c-when", fmtWhen(e.dlq_at));
      when.title = "entry " + e.id + (e.dlq_source_id ? " · from input entry " + e.dlq_source_id : "");
      tr.appendChild(when);
      tr.appendChild(el("td", "c-reason", e.dlq_reason || "—"));
      tr.appendChild(el("td", "c-frame", f.frame_id != null ? f.frame_id : "—"));
      tr.appendChild(el("td", "c-cam", f.camera_id != null ? f.camera_id : "—"));
      tr.appendChild(el("td", "c-type", detectionType(f)));
      var rep = el("td", "c-num", String(e.replayed || 0));
      rep.setAttribute("data-testid", "dlq-replayed");
      tr.appendChild(rep);
      var d = el("td", "c-detail", e.dlq_detail || "");
      d.title = e.dlq_detail || "";
      tr.appendChild(d);
      body.appendChild(tr);
    });
    tid("dlq-empty").hidden = entries.length > 0;
  }

  function renderPager() {
    var n = st.cursors.length;
    tid("dlq-page").textContent = "page " + n;
    tid("dlq-newer").disabled = st.busy || n <= 1;
    tid("dlq-older").disabled = st.busy || !st.next;
    replayBtn.disabled = st.busy || !st.reason;
    replayBtn.textContent = st.reason ? "Replay " + st.reason : "Replay";
    replayBtn.title = st.reason
      ? "Put the " + st.reason + " entries back into the input stream"
      : "Pick a reason to replay";
  }

  function loadPage() {
    var args = ["limit=" + PAGE];
    var after = st.cursors[st.cursors.length - 1];
    if (st.reason) args.push("reason=" + encodeURIComponent(st.reason));
    if (after) args.push("after=" + encodeURIComponent(after));
    st.busy = true;
    renderPager();
    return call("GET", "/api/v1/dlq?" + args.join("&")).then(function (r) {
      if (!r.ok) { say(r.status + ": " + r.detail, "err"); return; }
      var entries = r.json && Array.isArray(r.json.entries) ? r.json.entries : [];
      st.next = r.json && typeof r.json.next === "string" ? r.json.next : null;
      renderEntries(entries);
    }).catch(function (e) {
      say("Could not reach the gateway: " + (e && e.message ? e.message : e), "err");
    }).then(function () {
      st.busy = false;
      renderPager();
    });
  }

  function loadSummary() {
    return call("GET", "/api/v1/dlq/summary").then(function (r) {
      if (r.ok) renderReasons(r.json);
      else say(r.status + ": " + r.detail, "err");
    }).catch(function () { /* loadPage says it */ });
  }

  function refresh() {
    st.cursors = [null];
    return Promise.all([loadSummary(), loadPage()]);
  }

  reasonsEl.addEventListener("click", function (e) {
    var b = e.target.closest("button[data-reason]");
    if (!b || st.busy) return;
    st.reason = b.getAttribute("data-reason");
    Array.prototype.forEach.call(reasonsEl.children, function (x) {
      x.setAttribute("aria-pressed", String(x === b));
    });
    say("", "");
    st.cursors = [null];
    loadPage();
  });
  tid("dlq-older").addEventListener("click", function () {
    if (!st.next) return;
    st.cursors.push(st.next);
    loadPage();
  });
  tid("dlq-newer").addEventListener("click", function () {
    if (st.cursors.length <= 1) return;
    st.cursors.pop();
    loadPage();
  });
  tid("dlq-refresh").addEventListener("click", function () { say("", ""); refresh(); });

  replayBtn.addEventListener("click", function () {
    if (!st.reason || st.busy) return;
    var payload = { reason: st.reason };
    if (forceEl.checked) payload.force = true;
    st.busy = true;
    renderPager();
    say("Replaying " + st.reason + "…", "");
    call("POST", "/api/v1/dlq/replay", payload).then(function (r) {
      if (!r.ok) { say(r.status + ": " + r.detail, "err"); return; }
      var j = r.json || {};
      var by = j.skipped_by || {};
      var why = Object.keys(by).filter(function (k) { return by[k]; })
        .map(function (k) { return by[k] + " " + k; }).join(", ");
      say("Replayed " + j.replayed + ", skipped " + j.skipped + (why ? " (" + why + ")" : "") +
        (j.more ? "; more remain: replay again" : "") + ".", "ok");
    }).catch(function (e) {
      say("Could not reach the gateway: " + (e && e.message ? e.message : e), "err");
    }).then(function () {
      st.busy = false;
      return refresh();
    });
  });

  renderReasons(null);
  renderPager();
  refresh();
  window.fbDlq = { refresh: refresh, state: st };
})();
