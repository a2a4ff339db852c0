#!/usr/bin/env python3
"""Checks of the chart's alerts and Grafana dashboard against the real thing,
run by tools/ci/check-monitoring.sh (which provides helm and promtool).

1. The chart is rendered with the PrometheusRule and the dashboard on; the
   rules pass `promtool check rules`, every alert has a `promtool test rules`
   case that fires it (tools/ci/monitoring/alerts.test.yaml), and the tests
   pass.
2. The dashboard is valid JSON with a query in every panel.
3. A built gateway runs against its own redis-server and nats-server on free
   loopback ports, with processors registered (one on Redis, one on NATS) and
   frames injected (some malformed, some of a type nobody takes). Its
   /metrics passes `promtool check metrics`.
4. A real Prometheus scrapes that gateway every second with the labels a
   ServiceMonitor gives (namespace, job, pod) and loads the rendered rules.
   Every dashboard query is run against it: it must name only series
   /metrics exports, return data, and carry the labels it groups by. Every
   alert expression must name only exported series (and Prometheus's `up`),
   and every rule must evaluate without error. docs/protocol.md must list
   every series family /metrics exports.

Prints one line per check and a closing "monitoring: N passed, N failed".
Usage: check-monitoring.py --helm HELM --bin-dir DIR [--keep DIR]
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CHART = os.path.join(REPO, "charts", "frame-buffer")
TESTS = os.path.join(HERE, "monitoring", "alerts.test.yaml")
RELEASE, NAMESPACE = "fb", "video"
JOB = "fb-frame-buffer"  # the release's fullname: the Service a ServiceMonitor scrapes
POD = "fb-frame-buffer-0"

passed = 0
failed = 0


def check(name, fn):
    """Runs one named check; fn(expect) records failures with expect(cond, msg)."""
    global passed, failed
    errors = []

    def expect(cond, msg):
        if not cond:
            errors.append(msg)
        return bool(cond)

    try:
        fn(expect)
    except Exception as e:  # a check that throws has failed, with the reason
        errors.append("threw: %r" % e)
    if errors:
        failed += 1
        print("FAIL %s" % name)
        for e in errors:
            print("       " + str(e).replace("\n", "\n       "))
    else:
        passed += 1
        print("ok   %s" % name)
    sys.stdout.flush()
    return not errors


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("timed out after %ds waiting for %s" % (timeout, what))


# ------------------------------------------------------------ the chart
def render(helm, tmp):
    """The rendered PrometheusRule's groups (as a rules file) and the board."""
    r = subprocess.run(
        [helm, "template", RELEASE, CHART, "--namespace", NAMESPACE,
         "--set", "metrics.prometheusRule.enabled=true",
         "--set", "metrics.grafanaDashboard.enabled=true",
         "--show-only", "templates/prometheusrule.yaml",
         "--show-only", "templates/grafana-dashboard.yaml"],
        capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError("helm template failed: " + r.stderr)
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    rules_file = os.path.join(tmp, "rules.yaml")
    with open(rules_file, "w") as f:
        yaml.safe_dump({"groups": rule["spec"]["groups"]}, f, sort_keys=False)
    return rules_file, rule["spec"]["groups"], cm["data"]["frame-buffer.json"]


# PromQL words that look like metric names.
PROMQL_WORDS = set("""sum min max avg group stddev stdvar count count_values bottomk topk
quantile by without on ignoring group_left group_right and or unless bool offset
rate irate increase delta idelta deriv predict_linear histogram_quantile
label_replace label_join abs ceil floor round clamp clamp_min clamp_max exp ln log2
log10 sqrt time timestamp vector scalar sort sort_desc absent absent_over_time
changes resets avg_over_time min_over_time max_over_time sum_over_time
count_over_time quantile_over_time stddev_over_time last_over_time present_over_time
inf nan le""".split())


def series_names(expr):
    """The metric names an expression reads (label matchers and grouping lists removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)  # matchers
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", e))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"\d.*", n)}


def grouping_labels(expr):
    out = []
    for m in re.finditer(r"\bby\s*\(([^)]*)\)", expr):
        out += [x.strip() for x in m.group(1).split(",") if x.strip()]
    return [x for x in out if x != "le"]


def board_targets(board):
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p.get("title", "?"), t.get("expr", "")))
            walk(p.get("panels", []))

    walk(board.get("panels", []))
    return out


def board_query(expr):
    """A dashboard query as Prometheus gets it from Grafana for this gateway."""
    return (expr.replace("$namespace", NAMESPACE).replace("$job", JOB).replace("$pod", ".*")
            .replace("$__rate_interval", "15s"))


# -------------------------------------------------------------- servers
class Procs:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []

    def start(self, name, argv, env=None):
        log = open(os.path.join(self.tmp, name + ".log"), "wb")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                             cwd=self.tmp, start_new_session=True)
        self.procs.append((name, p))
        return p

    def log(self, name, tail=3000):
        try:
            with open(os.path.join(self.tmp, name + ".log"), "rb") as f:
                return f.read()[-tail:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def tcp_open(port):
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def parse_exposition(text):
    """(family names from # TYPE, sample names, {sample name: [label dicts]})"""
    families, samples = set(), {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families.add(line.split()[2])
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
            if m:
                labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
                samples.setdefault(m.group(1), []).append(labels)
    return families, samples


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--helm", required=True)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--keep", help="keep the work directory (rules, metrics, logs) here")
    args = ap.parse_args()
    promtool = shutil.which("promtool")
    prometheus = shutil.which("prometheus")
    tmp = tempfile.mkdtemp(prefix="fb-monitoring-")
    procs = Procs(tmp)
    try:
        run(args, promtool, prometheus, tmp, procs)
    finally:
        procs.stop()
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(tmp, args.keep, ignore=shutil.ignore_patterns("prom-data", "js"))
        shutil.rmtree(tmp, ignore_errors=True)
    print("monitoring: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


def run(args, promtool, prometheus, tmp, procs):
    state = {}

    def tools(expect):
        expect(promtool, "promtool is not installed (Debian: apt-get install prometheus)")
        expect(prometheus, "prometheus is not installed (Debian: apt-get install prometheus)")
        for b in ("frame-buffer", "fb-inject"):
            expect(os.access(os.path.join(args.bin_dir, b), os.X_OK), "no %s in %s" % (b, args.bin_dir))
        for b in ("redis-server", "nats-server"):
            expect(shutil.which(b) or os.access("/usr/sbin/" + b, os.X_OK), "%s is not installed" % b)

    if not check("promtool, prometheus, the gateway and the servers are at hand", tools):
        return

    def rendered(expect):
        state["rules_file"], state["groups"], state["board_text"] = render(args.helm, tmp)

    if not check("the chart renders its PrometheusRule and dashboard ConfigMap", rendered):
        return
    rules = [r for g in state["groups"] for r in g["rules"]]
    alerts = sorted({r["alert"] for r in rules if "alert" in r})

    def check_rules(expect):
        r = subprocess.run([promtool, "check", "rules", state["rules_file"]], capture_output=True, text=True)
        expect(r.returncode == 0, r.stdout + r.stderr)

    check("promtool check rules: the rendered alerts (%d rules)" % len(rules), check_rules)

    def unit_tests(expect):
        with open(TESTS) as f:
            tests = yaml.safe_load(f)
        fired = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])
                 if t.get("exp_alerts")}
        quiet = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])
                 if not t.get("exp_alerts")}
        for a in alerts:
            expect(a in fired, "no test case fires %s" % a)
            expect(a in quiet, "no test case checks that %s stays quiet" % a)
        shutil.copy(TESTS, os.path.join(tmp, "alerts.test.yaml"))
        r = subprocess.run([promtool, "test", "rules", "alerts.test.yaml"], cwd=tmp,
                           capture_output=True, text=True)
        expect(r.returncode == 0, r.stdout + r.stderr)

    check("promtool test rules: every alert fires in a test and stays quiet in another (%s)"
          % ", ".join(alerts), unit_tests)

    def board_valid(expect):
        board = json.loads(state["board_text"])
        state["board"] = board
        expect(board.get("uid") and board.get("title"), "no uid or title")
        ids = []

        def walk(panels):
            for p in panels:
                ids.append(p.get("id"))
                g = p.get("gridPos", {})
                expect(g.get("x", 0) + g.get("w", 0) <= 24, "panel %s is wider than the grid" % p.get("title"))
                if p.get("type") != "row":
                    expect(p.get("targets"), "panel %s has no query" % p.get("title"))
                    for t in p.get("targets", []):
                        expect(t.get("expr"), "panel %s has an empty query" % p.get("title"))
                        expect((t.get("datasource") or {}).get("uid") == "${datasource}",
                               "panel %s does not use the data source variable" % p.get("title"))
                walk(p.get("panels", []))

        walk(board.get("panels", []))
        expect(len(ids) == len(set(ids)), "panel ids are not unique")
        names = [v["name"] for v in board.get("templating", {}).get("list", [])]
        for v in ("datasource", "namespace", "job", "pod"):
            expect(v in names, "no dashboard variable %s" % v)

    if not check("the Grafana dashboard is valid JSON with a query in every panel", board_valid):
        return

    # ---------------------------------------------------- a real gateway
    rport, nport, gport, pport = free_port(), free_port(), free_port(), free_port()
    api = "http://127.0.0.1:%d" % gport
    redis_url = "redis://127.0.0.1:%d/0" % rport

    def servers(expect):
        procs.start("redis", ["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", tmp])
        procs.start("nats", ["nats-server", "-a", "127.0.0.1", "-p", str(nport), "-js",
                             "-sd", os.path.join(tmp, "js")])
        wait_for(lambda: tcp_open(rport) and tcp_open(nport), 10, "redis-server and nats-server")
        env = dict(os.environ, REDIS_URL=redis_url, NATS_URL="nats://127.0.0.1:%d" % nport,
                   LISTEN="127.0.0.1:%d" % gport, CONSUMER_NAME=POD, LOG_LEVEL="warn",
                   FRAME_MAX_AGE_MS="0")
        procs.start("gateway", [os.path.join(args.bin_dir, "frame-buffer")], env=env)
        wait_for(lambda: http("GET", api + "/readyz")[0] == 200, 20, "the gateway's /readyz")
        for body in ({"id": "mon-local", "capabilities": ["person"], "capacity": 8, "queue": ""},
                     {"id": "mon-remote", "capabilities": ["vehicle"], "capacity": 8, "queue": "",
                      "transport": "nats"}):
            code, text = http("POST", api + "/api/v1/processors/register", body)
            expect(code == 201, "registering %s: %d %s" % (body["id"], code, text))
        code, text = http("POST", api + "/api/v1/processors/heartbeat",
                          {"processor_id": "mon-local", "status": "healthy", "queue_depth": 0})
        expect(code == 200, "heartbeat: %d %s" % (code, text))
        # person -> Redis, vehicle -> NATS, face -> nobody (DLQ no_processor),
        # one entry in 100 malformed; then a steady trickle for the rates.
        inject = os.path.join(args.bin_dir, "fb-inject")
        r = subprocess.run([inject, "--redis-url", redis_url, "--frames", "3000", "--types",
                            "person,vehicle,face", "--malformed-every", "100", "--quiet"],
                           capture_output=True, text=True, timeout=60)
        expect(r.returncode == 0, "fb-inject: " + r.stdout + r.stderr)
        procs.start("inject", [inject, "--redis-url", redis_url, "--frames", "0", "--rate", "200",
                               "--types", "person,vehicle,face", "--malformed-every", "50", "--quiet"])
        def consumed():
            m = re.search(r"^frame_buffer_frames_consumed_total (\S+)", http("GET", api + "/metrics")[1], re.M)
            return m and float(m.group(1)) >= 3000

        wait_for(consumed, 20, "the gateway to read the 3,000 injected frames")

    if not check("a gateway with its own Redis and NATS, two processors and frames flowing", servers):
        print(procs.log("gateway"))
        return

    def metrics_lint(expect):
        code, text = http("GET", api + "/metrics")
        expect(code == 200, "/metrics answered %d" % code)
        with open(os.path.join(tmp, "metrics.txt"), "w") as f:
            f.write(text)
        state["families"], state["samples"] = parse_exposition(text)
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        expect(r.returncode == 0 and not (r.stdout + r.stderr).strip(),
               "promtool check metrics:\n" + r.stdout + r.stderr)

    check("promtool check metrics: the gateway's /metrics, with no lint finding", metrics_lint)

    def documented(expect):
        with open(os.path.join(REPO, "docs", "protocol.md")) as f:
            doc = f.read()
        for name in sorted(state["families"]):
            expect("`%s`" % name in doc, "%s is exported but not in docs/protocol.md's Metrics" % name)

    check("docs/protocol.md lists every series family /metrics exports", documented)
    exported = set(state.get("samples", {})) | set(state.get("families", set()))

    def dlq_reasons(expect):
        reasons = {l.get("reason") for l in state["samples"].get("frame_buffer_dlq_total", [])}
        rule_reasons = {r["labels"]["reason"] for r in rules if r.get("alert") == "FrameBufferDLQRateHigh"}
        expect(rule_reasons and rule_reasons <= reasons,
               "alerted DLQ reasons %s, exported %s" % (sorted(rule_reasons), sorted(reasons)))

    check("every DLQ reason with an alert threshold is a reason /metrics exports", dlq_reasons)

    # -------------------------------------------------- a real Prometheus
    def prom_up(expect):
        cfg = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [state["rules_file"]],
            "scrape_configs": [{
                "job_name": JOB,
                "static_configs": [{"targets": ["127.0.0.1:%d" % gport],
                                    "labels": {"namespace": NAMESPACE, "pod": POD}}],
            }],
        }
        path = os.path.join(tmp, "prometheus.yml")
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        procs.start("prometheus", [prometheus, "--config.file=" + path,
                                   "--storage.tsdb.path=" + os.path.join(tmp, "prom-data"),
                                   "--web.listen-address=127.0.0.1:%d" % pport, "--log.level=warn"])

        def scraped():
            q = urllib.parse.quote('count_over_time(up{job="%s"}[1m])' % JOB)
            code, text = http("GET", "http://127.0.0.1:%d/api/v1/query?query=%s" % (pport, q))
            res = json.loads(text)["data"]["result"] if code == 200 else []
            return res and float(res[0]["value"][1]) >= 8

        wait_for(scraped, 60, "Prometheus to scrape the gateway 8 times")

    if not check("Prometheus scrapes the gateway as a ServiceMonitor would (namespace, job, pod)", prom_up):
        print(procs.log("prometheus"))
        return

    def query(expr):
        q = urllib.parse.urlencode({"query": expr})
        code, text = http("GET", "http://127.0.0.1:%d/api/v1/query?%s" % (pport, q))
        body = json.loads(text)
        if code != 200 or body.get("status") != "success":
            raise AssertionError("%s: %s" % (expr, body.get("error", text)))
        return body["data"]["result"]

    def board_live(expect):
        targets = board_targets(state["board"])
        for title, expr in targets:
            names = series_names(expr)
            expect(names, "%s: %s names no series" % (title, expr))
            for n in names:
                expect(n in exported, "%s: %s is not exported by /metrics" % (title, n))
            try:
                res = query(board_query(expr))
            except AssertionError as e:
                expect(False, "%s: %s" % (title, e))
                continue
            if not expect(res, "%s: %s returned no data" % (title, board_query(expr))):
                continue
            for lab in grouping_labels(expr):
                expect(any(r["metric"].get(lab) for r in res),
                       "%s: grouped by %s, which no series of %s carries" % (title, lab, expr))
        state["queries"] = len(targets)

    check("every dashboard query names exported series and returns data from a real Prometheus",
          board_live)

    def rules_live(expect):
        for r in rules:
            name = r.get("alert") or r.get("record")
            for n in series_names(r["expr"]):
                expect(n in exported or n == "up", "%s: %s is not exported by /metrics" % (name, n))
            try:
                query(r["expr"])
            except AssertionError as e:
                expect(False, "%s: %s" % (name, e))
        time.sleep(2)  # two more evaluations
        code, text = http("GET", "http://127.0.0.1:%d/api/v1/rules" % pport)
        groups = json.loads(text)["data"]["groups"]
        loaded = [x for g in groups for x in g["rules"]]
        expect(len(loaded) == len(rules), "Prometheus loaded %d rules of %d" % (len(loaded), len(rules)))
        for x in loaded:
            expect(x.get("health") == "ok", "%s: health %s %s" % (x["name"], x.get("health"), x.get("lastError", "")))

    check("every alert names exported series (or up) and evaluates without error in Prometheus", rules_live)


if __name__ == "__main__":
    sys.exit(main())
