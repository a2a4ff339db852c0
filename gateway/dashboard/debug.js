/* The dashboard's debugging panels: "Find a frame" asks GET
 * /api/v1/frames/{id} (fleet-wide: the replica that routed it answers) and
 * shows where the frame went; "Shadows" lists the fleet's shadow routes
 * (GET /api/v1/shadows) with their copies a second, read every 2 s.
 * Self-contained: nothing is shared with the rest of the page. */
(function () {
  "use strict";
  var FIELDS = ["outcome", "processor_id", "transport", "target", "reason", "strategy",
                "replica", "camera_id", "source_id", "routed_at_ms", "latency_ms"];

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  /* ------------------------------------------------------ find a frame */
  var find = document.querySelector('[data-testid="frame-card"]');
  if (find) {
    var form = find.querySelector("form");
    var input = find.querySelector('[data-testid="frame-id"]');
    var out = find.querySelector('[data-testid="frame-result"]');
    var msg = find.querySelector('[data-testid="frame-msg"]');
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var id = input.value.trim();
      out.textContent = "";
      if (!id) return;
      msg.textContent = "Looking…";
      msg.className = "form-msg";
      fetch("/api/v1/frames/" + encodeURIComponent(id), {headers: {Accept: "application/json"}})
        .then(function (r) { return r.json().then(function (doc) { return [r.status, doc]; }); })
        .then(function (res) {
          var status = res[0], doc = res[1];
          if (status !== 200) {
            msg.textContent = doc.detail || ("HTTP " + status);
            msg.className = "form-msg err";
            return;
          }
          msg.textContent = "";
          var dl = el("dl", "settings frame-fate");
          dl.setAttribute("data-testid", "frame-fate");
          FIELDS.forEach(function (k) {
            var v = doc[k];
            if (k === "routed_at_ms" && v) v = new Date(v).toISOString();
            dl.appendChild(el("dt", "", k));
            var dd = el("dd", k === "outcome" ? "fate-" + v : "", v === null || v === undefined ? "—" : String(v));
            dd.setAttribute("data-field", k);
            dl.appendChild(dd);
          });
          out.appendChild(dl);
        })
        .catch(function (e) {
          msg.textContent = "The gateway did not answer: " + e;
          msg.className = "form-msg err";
        });
    });
  }

  /* ------------------------------------------------------------ shadows */
  var card = document.querySelector('[data-testid="shadows-card"]');
  if (!card) return;
  var body = card.querySelector('[data-testid="shadows-body"]');
  var empty = card.querySelector('[data-testid="shadows-empty"]');
  var last = {}; // name -> [time ms, sent]

  function matchText(m) {
    var parts = [];
    if (m.detection_type) parts.push(m.detection_type);
    if (m.camera_id) parts.push("camera " + m.camera_id);
    return parts.length ? parts.join(", ") : "every frame";
  }

  function render(shadows) {
    body.textContent = "";
    empty.hidden = shadows.length > 0;
    var now = Date.now(), seen = {};
    shadows.forEach(function (s) {
      var c = s.copies || {};
      var prev = last[s.name], rate = "—";
      if (prev && now > prev[0]) rate = Math.max(0, Math.round((c.sent - prev[1]) * 1000 / (now - prev[0]))) + "/s";
      last[s.name] = [now, c.sent];
      seen[s.name] = true;
      var tr = el("tr");
      tr.setAttribute("data-shadow", s.name);
      [s.name, matchText(s.match || {}), s.percent + "% by " + s.sample, s.target, rate,
       String(c.sent || 0), String((c.target_full || 0) + (c.target_dead || 0) + (c.failed || 0))]
        .forEach(function (v, i) {
          var td = el("td", i >= 4 ? "c-num" : "", v);
          tr.appendChild(td);
        });
      body.appendChild(tr);
    });
    Object.keys(last).forEach(function (k) { if (!seen[k]) delete last[k]; });
  }

  function poll() {
    fetch("/api/v1/shadows", {headers: {Accept: "application/json"}})
      .then(function (r) { return r.json(); })
      .then(function (doc) { render(doc.shadows || []); })
      .catch(function () { /* the connection line says when the gateway is away */ });
  }
  poll();
  setInterval(poll, 2000);
})();
