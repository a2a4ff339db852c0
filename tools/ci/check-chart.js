#!/usr/bin/env node
// Checks of the Helm chart charts/frame-buffer, run by tools/ci/check-chart.sh
// (which provides HELM and NODE_PATH). For the defaults and each value set in
// charts/frame-buffer/ci/*.yaml: `helm lint --strict`, `helm template`, then
// the rendered manifests must parse, pass the Kubernetes JSON schemas, and
// hold what an operator relies on (probes, non-root read-only pods, settings
// from values, secrets only through the Secret, one consumer name per
// replica, Redis Sentinel and replica settings, optional objects exactly
// when enabled). Value sets under tools/ci/chart-bad-values/ must be
// rejected with the message they name.
// With a build at hand, the real gateway is started with each set's pod
// environment (gateway-probe.js), Redis, its sentinels and NATS pointed at
// closed loopback ports: it must accept every setting, be alive (/healthz
// 200) but not ready (/readyz 503), and stop on SIGTERM within the grace
// period.
// Then the Dockerfile and package-list checks of check-dockerfile.js.
// Prints one line per check and a closing "chart: N passed, N failed".
// Environment: HELM (the helm binary), NODE_PATH (the tools/ci/node
// packages), CHART_OUT (keep rendered manifests and NOTES there),
// CHART_DIR (check another copy of the chart), FB_BIN_DIR (built binaries,
// default build/bin).
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');
const YAML = require('yaml');

const repo = path.resolve(__dirname, '..', '..');
const chartDir = process.env.CHART_DIR || path.join(repo, 'charts', 'frame-buffer');
const badDir = path.join(__dirname, 'chart-bad-values');
const helm = process.env.HELM || 'helm';
const keep = process.env.CHART_OUT; // a directory to keep the rendered YAML in

// ------------------------------------------------------------ reporting

let passed = 0;
let failed = 0;

/* Runs one named check; `fn(expect)` records failures with expect(cond, msg). */
function check(name, fn) {
  const errors = [];
  const expect = (cond, msg) => {
    if (!cond) errors.push(msg);
    return !!cond;
  };
  try {
    fn(expect);
  } catch (e) {
    errors.push(`threw: ${e.stack || e}`);
  }
  if (errors.length === 0) {
    passed++;
    console.log(`ok   ${name}`);
  } else {
    failed++;
    console.log(`FAIL ${name}`);
    for (const e of errors) console.log(`       ${e.split('\n').join('\n       ')}`);
  }
  return errors.length === 0;
}

// --------------------------------------------------------------- helpers

function runHelm(args) {
  const r = spawnSync(helm, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function readYaml(file) {
  return YAML.parse(fs.readFileSync(file, 'utf8')) || {};
}

const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const nil = (v) => v === null || v === undefined;

/* Helm's merge of user values over the chart's: maps merge, null deletes. */
function mergeValues(base, over) {
  const out = { ...base };
  for (const [k, v] of Object.entries(over || {})) {
    if (v === null) delete out[k];
    else if (isObj(v) && isObj(out[k])) out[k] = mergeValues(out[k], v);
    else out[k] = v;
  }
  return out;
}

function matches(selector, labels) {
  return Object.entries(selector || {}).every(([k, v]) => (labels || {})[k] === v);
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

// Kinds the chart renders, with the JSON schema model that validates each.
const MODELS = {
  'v1/ConfigMap': () => require('kubernetes-models/v1').ConfigMap,
  'v1/Pod': () => require('kubernetes-models/v1').Pod,
  'v1/Secret': () => require('kubernetes-models/v1').Secret,
  'v1/Service': () => require('kubernetes-models/v1').Service,
  'v1/ServiceAccount': () => require('kubernetes-models/v1').ServiceAccount,
  'apps/v1/StatefulSet': () => require('kubernetes-models/apps/v1').StatefulSet,
  'autoscaling/v2/HorizontalPodAutoscaler': () =>
    require('kubernetes-models/autoscaling/v2').HorizontalPodAutoscaler,
  'policy/v1/PodDisruptionBudget': () => require('kubernetes-models/policy/v1').PodDisruptionBudget,
  'networking.k8s.io/v1/Ingress': () => require('kubernetes-models/networking.k8s.io/v1').Ingress,
  'networking.k8s.io/v1/NetworkPolicy': () =>
    require('kubernetes-models/networking.k8s.io/v1').NetworkPolicy,
  'monitoring.coreos.com/v1/ServiceMonitor': () =>
    require('@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1').ServiceMonitor,
  'monitoring.coreos.com/v1/PrometheusRule': () =>
    require('@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1').PrometheusRule,
};

// The JSON schemas let unknown fields through; a misspelt field where it
// matters (a probe, a security context) must not pass silently.
const KNOWN = {
  podSpec: `activeDeadlineSeconds affinity automountServiceAccountToken containers dnsConfig
    dnsPolicy enableServiceLinks ephemeralContainers hostAliases hostIPC hostNetwork hostPID
    hostUsers hostname imagePullSecrets initContainers nodeName nodeSelector os overhead
    preemptionPolicy priority priorityClassName readinessGates resourceClaims resources
    restartPolicy runtimeClassName schedulerName schedulingGates securityContext serviceAccount
    serviceAccountName setHostnameAsFQDN shareProcessNamespace subdomain
    terminationGracePeriodSeconds tolerations topologySpreadConstraints volumes`,
  container: `name image command args workingDir ports envFrom env resources resizePolicy
    restartPolicy volumeMounts volumeDevices livenessProbe readinessProbe startupProbe lifecycle
    terminationMessagePath terminationMessagePolicy imagePullPolicy securityContext stdin
    stdinOnce tty`,
  securityContext: `allowPrivilegeEscalation appArmorProfile capabilities privileged procMount
    readOnlyRootFilesystem runAsGroup runAsNonRoot runAsUser seLinuxOptions seccompProfile
    windowsOptions`,
  podSecurityContext: `appArmorProfile fsGroup fsGroupChangePolicy runAsGroup runAsNonRoot
    runAsUser seLinuxChangePolicy seLinuxOptions seccompProfile supplementalGroups
    supplementalGroupsPolicy sysctls windowsOptions`,
  probe: `exec httpGet tcpSocket grpc initialDelaySeconds timeoutSeconds periodSeconds
    successThreshold failureThreshold terminationGracePeriodSeconds`,
};
for (const k of Object.keys(KNOWN)) KNOWN[k] = new Set(KNOWN[k].split(/\s+/).filter(Boolean));

function unknownKeys(obj, set) {
  return Object.keys(obj || {}).filter((k) => !set.has(k));
}

/* Every pod template in the rendered docs: [{doc, spec, labels}] */
function podTemplates(docs) {
  const out = [];
  for (const d of docs) {
    if (d.kind === 'Pod') out.push({ doc: d, spec: d.spec, labels: d.metadata.labels || {} });
    else if (d.spec && d.spec.template && d.spec.template.spec)
      out.push({ doc: d, spec: d.spec.template.spec, labels: d.spec.template.metadata.labels || {} });
  }
  return out;
}

const id = (d) => `${d.kind}/${d.metadata && d.metadata.name}`;

// The settings (docs/protocol.md: Settings) every gateway pod must get from values, and where.
const SETTINGS = {
  PORT: (v) => String(v.config.port),
  INPUT_STREAM: (v) => v.config.inputStream,
  CONSUMER_GROUP: (v) => v.config.consumerGroup,
  ROUTING_STRATEGY: (v) => v.config.routingStrategy,
  OVERLOAD_POLICY: (v) => v.config.overloadPolicy,
  HEARTBEAT_TIMEOUT_MS: (v) => String(v.config.heartbeatTimeoutMs),
  FRAME_MAX_AGE_MS: (v) => String(v.config.frameMaxAgeMs),
  MAX_DELIVERIES: (v) => String(v.config.maxDeliveries),
  BATCH_SIZE: (v) => String(v.config.batchSize),
  CLAIM_IDLE_MS: (v) => String(v.config.claimIdleMs),
  LOG_LEVEL: (v) => v.config.logLevel,
  LOG_FORMAT: (v) => v.config.logFormat,
  FLEET_VIEW: (v) => (v.config.fleetView ? '1' : '0'),
  DLQ_MAXLEN: (v) => String(v.config.dlqMaxlen),
  DLQ_REPLAY_MAX: (v) => String(v.config.dlqReplayMax),
  FRAME_TRACE: (v) => (v.config.frameTrace ? '1' : '0'),
  SLOW_START_MS: (v) => String(v.config.slowStartMs),
  HASH_BOUND: (v) => String(v.config.hashBound),
  REDIS_WAIT_REPLICAS: (v) => String(v.redis.waitReplicas),
  NATS_JS_REPLICAS: (v) => String(v.nats.jetstreamReplicas),
};
// Settings that must come from the Secret, never from a plain value.
const SECRET_ENV = {
  API_TOKEN: 'apiToken',
  PROCESSOR_TOKEN: 'processorToken',
  REDIS_PASSWORD: 'redisPassword',
  REDIS_SENTINEL_PASSWORD: 'redisSentinelPassword',
  NATS_TOKEN: 'natsToken',
  NATS_USER: 'natsUser',
  NATS_PASSWORD: 'natsPassword',
};
// Settings from the Secret that only make sense with another value on.
const SECRET_ENV_WHEN = {
  REDIS_SENTINEL_PASSWORD: (v) => v.redis.sentinel.enabled,
};
const SECRET_VALUES = ['apiToken', 'processorToken', 'redisPassword', 'redisSentinelPassword', 'natsToken', 'natsUser', 'natsPassword', 'natsCreds', 'natsTlsCA'];

// ------------------------------------------------- the checks of one set

function checkValueSet(setName, valueFiles) {
  const defaults = readYaml(path.join(chartDir, 'values.yaml'));
  let v = defaults;
  for (const f of valueFiles) v = mergeValues(v, readYaml(f));
  const fileArgs = valueFiles.flatMap((f) => ['-f', f]);
  const release = 'fb';
  const ns = 'video';
  const tag = `[${setName}]`;

  check(`${tag} helm lint --strict`, (expect) => {
    const r = runHelm(['lint', '--strict', chartDir, ...fileArgs]);
    expect(r.code === 0, `helm lint failed:\n${r.out}${r.err}`);
  });

  let text = '';
  const ok = check(`${tag} helm template renders`, (expect) => {
    const r = runHelm(['template', release, chartDir, '--namespace', ns, '--include-crds', ...fileArgs]);
    text = r.out;
    expect(r.code === 0, `helm template failed:\n${r.err}`);
    if (keep) fs.writeFileSync(path.join(keep, `${setName}.yaml`), text);
  });
  if (!ok) return;

  let docs = [];
  check(`${tag} manifests parse as YAML without duplicate keys`, (expect) => {
    for (const d of YAML.parseAllDocuments(text, { uniqueKeys: true })) {
      expect(d.errors.length === 0, `YAML error: ${d.errors.map((e) => e.message).join('; ')}`);
      expect(d.warnings.length === 0, `YAML warning: ${d.warnings.map((e) => e.message).join('; ')}`);
      const js = d.toJS();
      if (js !== null && js !== undefined) docs.push(js);
    }
    expect(!/<no value>/.test(text), 'a template printed <no value>');
  });

  check(`${tag} every object is well formed and valid against its Kubernetes schema`, (expect) => {
    const seen = new Set();
    for (const d of docs) {
      const key = `${d.apiVersion}/${d.kind}`;
      expect(d.metadata && d.metadata.name, `${key} without metadata.name`);
      const name = d.metadata.name;
      expect(!seen.has(`${key}/${name}`), `duplicate object ${key} ${name}`);
      seen.add(`${key}/${name}`);
      const nameRe = ['Service', 'StatefulSet'].includes(d.kind) ? DNS_LABEL : DNS_SUBDOMAIN;
      expect(nameRe.test(name) && name.length <= (nameRe === DNS_LABEL ? 63 : 253),
        `${id(d)}: "${name}" is not a valid name`);
      for (const [k, val] of Object.entries(d.metadata.labels || {}))
        expect(typeof val === 'string' && LABEL_VALUE.test(val) && val.length <= 63,
          `${id(d)}: label ${k}=${JSON.stringify(val)} is not a valid label value`);
      const model = MODELS[key];
      if (!expect(model, `${id(d)}: unexpected kind ${key}`)) continue;
      try {
        new (model())(d).validate();
      } catch (e) {
        expect(false, `${id(d)}: ${e.message}`);
      }
    }
  });

  check(`${tag} pod specs use only known fields where a typo would weaken them`, (expect) => {
    for (const { doc, spec } of podTemplates(docs)) {
      const where = id(doc);
      for (const k of unknownKeys(spec, KNOWN.podSpec)) expect(false, `${where}: unknown pod field ${k}`);
      for (const k of unknownKeys(spec.securityContext, KNOWN.podSecurityContext))
        expect(false, `${where}: unknown pod securityContext field ${k}`);
      for (const c of [...(spec.initContainers || []), ...spec.containers]) {
        for (const k of unknownKeys(c, KNOWN.container)) expect(false, `${where}/${c.name}: unknown container field ${k}`);
        for (const k of unknownKeys(c.securityContext, KNOWN.securityContext))
          expect(false, `${where}/${c.name}: unknown securityContext field ${k}`);
        for (const p of ['livenessProbe', 'readinessProbe', 'startupProbe'])
          for (const k of unknownKeys(c[p], KNOWN.probe)) expect(false, `${where}/${c.name}: unknown ${p} field ${k}`);
      }
    }
  });

  check(`${tag} every pod runs non-root with a read-only root, no privilege escalation, no capabilities, and resources`, (expect) => {
    for (const { doc, spec } of podTemplates(docs)) {
      const psc = spec.securityContext || {};
      for (const c of [...(spec.initContainers || []), ...spec.containers]) {
        const w = `${id(doc)}/${c.name}`;
        const sc = c.securityContext || {};
        const nonRoot = sc.runAsNonRoot ?? psc.runAsNonRoot;
        const uid = sc.runAsUser ?? psc.runAsUser;
        expect(nonRoot === true, `${w}: runAsNonRoot is not true`);
        expect(Number.isInteger(uid) && uid > 0, `${w}: runAsUser ${uid} is not a non-root uid`);
        expect(sc.readOnlyRootFilesystem === true, `${w}: readOnlyRootFilesystem is not true`);
        expect(sc.allowPrivilegeEscalation === false, `${w}: allowPrivilegeEscalation is not false`);
        expect(sc.privileged !== true, `${w}: privileged`);
        expect(((sc.capabilities || {}).drop || []).includes('ALL'), `${w}: capabilities do not drop ALL`);
        expect(!((sc.capabilities || {}).add || []).length, `${w}: adds capabilities`);
        expect(c.resources && c.resources.requests && c.resources.limits && c.resources.limits.memory,
          `${w}: no resource requests and memory limit`);
        expect(!/:latest$/.test(c.image) && /[:@]/.test(c.image), `${w}: image ${c.image} has no pinned tag`);
      }
      expect((psc.seccompProfile || {}).type === 'RuntimeDefault', `${id(doc)}: no RuntimeDefault seccomp profile`);
      const mounts = new Set(spec.containers.flatMap((c) => (c.volumeMounts || []).map((m) => m.name)));
      const vols = new Set((spec.volumes || []).map((x) => x.name));
      const claims = new Set(((doc.spec || {}).volumeClaimTemplates || []).map((x) => x.metadata.name));
      for (const m of mounts) expect(vols.has(m) || claims.has(m), `${id(doc)}: volumeMount ${m} has no volume`);
    }
  });

  // --------------------------------------------------------- the gateway
  const fullname = `${release}-frame-buffer`;
  const sts = docs.find((d) => d.kind === 'StatefulSet' && d.metadata.name === fullname);
  if (!check(`${tag} the gateway is a StatefulSet`, (expect) => expect(sts, `no StatefulSet ${fullname}`))) return;
  const pod = sts.spec.template;
  const gw = pod.spec.containers.find((c) => c.name === 'frame-buffer');
  const envList = (gw && gw.env) || [];
  const env = Object.fromEntries(envList.map((e) => [e.name, e]));
  const replicas = v.autoscaling.enabled ? v.autoscaling.maxReplicas : v.replicaCount;

  check(`${tag} gateway: replicas, selector, governing headless Service, service account`, (expect) => {
    expect(gw, 'no container named frame-buffer');
    if (v.autoscaling.enabled) expect(nil(sts.spec.replicas), 'replicas is set although the HPA owns it');
    else expect(sts.spec.replicas === v.replicaCount, `replicas ${sts.spec.replicas} != ${v.replicaCount}`);
    expect(matches(sts.spec.selector.matchLabels, pod.metadata.labels), 'selector does not match the pod labels');
    const headless = docs.find((d) => d.kind === 'Service' && d.metadata.name === sts.spec.serviceName);
    expect(headless && headless.spec.clusterIP === 'None', `serviceName ${sts.spec.serviceName} is not a headless Service`);
    expect(pod.spec.automountServiceAccountToken === false, 'the service account token is mounted');
    const sa = pod.spec.serviceAccountName;
    if (v.serviceAccount.create)
      expect(docs.some((d) => d.kind === 'ServiceAccount' && d.metadata.name === sa), `ServiceAccount ${sa} is not rendered`);
    const img = v.image.digest ? `${v.image.repository}@${v.image.digest}` : `${v.image.repository}:${v.image.tag || readYaml(path.join(chartDir, 'Chart.yaml')).appVersion}`;
    expect(gw.image === img, `image ${gw.image} != ${img}`);
  });

  check(`${tag} gateway: startup and liveness on /healthz, readiness on /readyz, on the API port`, (expect) => {
    const port = (gw.ports || []).find((p) => p.name === 'http');
    expect(port && port.containerPort === v.config.port, `containerPort http != ${v.config.port}`);
    const lp = (gw.livenessProbe || {}).httpGet || {};
    const rp = (gw.readinessProbe || {}).httpGet || {};
    expect(lp.path === '/healthz' && lp.port === 'http', `liveness probe is ${JSON.stringify(gw.livenessProbe)}`);
    expect(rp.path === '/readyz' && rp.port === 'http', `readiness probe is ${JSON.stringify(gw.readinessProbe)}`);
    const sp = (gw.startupProbe || {}).httpGet || {};
    expect(sp.path === '/healthz' && sp.port === 'http', `startup probe is ${JSON.stringify(gw.startupProbe)}`);
    for (const k of ['periodSeconds', 'failureThreshold', 'timeoutSeconds'])
      expect(gw.livenessProbe[k] === v.livenessProbe[k] && gw.readinessProbe[k] === v.readinessProbe[k] &&
        gw.startupProbe[k] === v.startupProbe[k], `probe ${k} does not follow values`);
  });

  check(`${tag} gateway: every setting of docs/protocol.md: Settings comes from values`, (expect) => {
    const names = envList.map((e) => e.name);
    const dups = names.filter((n, i) => names.indexOf(n) !== i);
    expect(dups.length === 0, `env defined twice: ${dups.join(', ')}`);
    for (const [name, want] of Object.entries(SETTINGS)) {
      const e = env[name];
      if (expect(e, `${name} is missing`)) expect(e.value === want(v), `${name}=${JSON.stringify(e.value)}, values say ${JSON.stringify(want(v))}`);
    }
    const redisUrl = v.redis.bundled.enabled ? `redis://${fullname}-redis:6379/0` : v.redis.url;
    const natsUrl = v.nats.bundled.enabled ? `nats://${fullname}-nats:4222` : v.nats.url;
    const js = nil(v.nats.jetstream) ? v.nats.bundled.enabled : v.nats.jetstream;
    expect(env.REDIS_URL && env.REDIS_URL.value === redisUrl, `REDIS_URL ${JSON.stringify(env.REDIS_URL)} != ${redisUrl}`);
    expect(env.NATS_URL && env.NATS_URL.value === natsUrl, `NATS_URL ${JSON.stringify(env.NATS_URL)} != ${natsUrl}`);
    expect(env.NATS_JETSTREAM && env.NATS_JETSTREAM.value === (js ? '1' : '0'), `NATS_JETSTREAM is ${JSON.stringify(env.NATS_JETSTREAM)}`);
    for (const e of v.extraEnv || []) expect(env[e.name], `extraEnv ${e.name} is missing`);
    if (v.config.allowedOrigins)
      expect(env.ALLOWED_ORIGINS && env.ALLOWED_ORIGINS.value === v.config.allowedOrigins, `ALLOWED_ORIGINS is ${JSON.stringify(env.ALLOWED_ORIGINS)}`);
    else expect(!env.ALLOWED_ORIGINS, 'ALLOWED_ORIGINS is set although config.allowedOrigins is empty');
    expect(JSON.stringify(gw.envFrom || []) === JSON.stringify(v.extraEnvFrom || []),
      `envFrom is ${JSON.stringify(gw.envFrom)}, extraEnvFrom says ${JSON.stringify(v.extraEnvFrom)}`);
  });

  check(`${tag} commonLabels and commonAnnotations on every object, commonLabels on every pod`, (expect) => {
    const cl = v.commonLabels || {};
    const ca = v.commonAnnotations || {};
    for (const d of docs) {
      const labels = d.metadata.labels || {};
      const ann = d.metadata.annotations || {};
      for (const [k, val] of Object.entries(cl)) expect(labels[k] === val, `${id(d)}: label ${k} missing`);
      for (const [k, val] of Object.entries(ca))
        if (!(d.kind === 'Pod' && k.startsWith('helm.sh/'))) expect(k in ann, `${id(d)}: annotation ${k} missing`);
      if (d.kind === 'Pod') expect(ann['helm.sh/hook'] === 'test', `${id(d)}: the helm test hook annotation was lost`);
    }
    for (const { doc, labels } of podTemplates(docs))
      for (const [k, val] of Object.entries(cl)) expect(labels[k] === val, `${id(doc)}: pod label ${k} missing`);
    for (const [k, val] of Object.entries(v.service.annotations || {})) {
      const svc = docs.find((d) => d.kind === 'Service' && d.metadata.name === fullname);
      expect(svc && (svc.metadata.annotations || {})[k] === val, `Service annotation ${k} lost to commonAnnotations`);
    }
  });

  const sentinel = v.redis.sentinel;
  check(`${tag} gateway: Redis Sentinel settings ${sentinel.enabled ? 'from values, password from the Secret' : 'absent (sentinel off)'}`, (expect) => {
    const names = ['REDIS_SENTINELS', 'REDIS_SENTINEL_MASTER', 'REDIS_SENTINEL_PASSWORD'];
    if (!sentinel.enabled) {
      for (const n of names) expect(!env[n], `${n} is set although redis.sentinel.enabled is false`);
      return;
    }
    expect(!v.redis.bundled.enabled, 'sentinel and the bundled Redis rendered together');
    const s = env.REDIS_SENTINELS;
    if (expect(s && typeof s.value === 'string', `REDIS_SENTINELS is ${JSON.stringify(s)}`)) {
      expect(s.value === sentinel.sentinels.join(','), `REDIS_SENTINELS=${JSON.stringify(s.value)}, wanted ${JSON.stringify(sentinel.sentinels.join(','))}`);
      const list = s.value.split(',');
      expect(list.length >= 1 && list.every((x) => /^[^\s:,/]{1,255}:[0-9]{1,5}$/.test(x)), `REDIS_SENTINELS=${s.value} is not a host:port list`);
    }
    const m = env.REDIS_SENTINEL_MASTER;
    expect(m && m.value === sentinel.masterName && sentinel.masterName, `REDIS_SENTINEL_MASTER is ${JSON.stringify(m)}, wanted ${JSON.stringify(sentinel.masterName)}`);
    // REDIS_URL still carries the database (and REDIS_PASSWORD the data nodes' password).
    expect(env.REDIS_URL && env.REDIS_URL.value, 'REDIS_URL is missing: the database would be lost');
    const p = env.REDIS_SENTINEL_PASSWORD;
    if (v.secret.existingSecret || (v.secret.create && v.secret.redisSentinelPassword)) {
      const ref = p && p.valueFrom && p.valueFrom.secretKeyRef;
      expect(p && nil(p.value) && ref && ref.name === (v.secret.existingSecret || fullname) && ref.key === v.secret.keys.redisSentinelPassword,
        `REDIS_SENTINEL_PASSWORD is ${JSON.stringify(p)}, wanted a secretKeyRef to key ${v.secret.keys.redisSentinelPassword}`);
    } else expect(!p, 'REDIS_SENTINEL_PASSWORD is set although no password is in play');
    // $(VAR) references resolve only to earlier variables: keep them plain.
    for (const n of names) if (env[n] && env[n].value) expect(!/\$\(/.test(env[n].value), `${n} holds a $(...) reference`);
  });

  check(`${tag} gateway: CONSUMER_NAME is the pod name, unique and stable per replica`, (expect) => {
    const podName = env.POD_NAME;
    expect(podName && podName.valueFrom && podName.valueFrom.fieldRef &&
      podName.valueFrom.fieldRef.fieldPath === 'metadata.name', 'POD_NAME is not the downward-API pod name');
    const cn = env.CONSUMER_NAME;
    if (!expect(cn && typeof cn.value === 'string' && cn.value.includes('$(POD_NAME)'), 'CONSUMER_NAME does not use $(POD_NAME)')) return;
    // $(VAR) expands only from variables defined earlier in the list.
    expect(envList.indexOf(podName) < envList.indexOf(cn), 'POD_NAME is defined after CONSUMER_NAME');
    // A StatefulSet names its pods <name>-<ordinal>, the same after every restart.
    const names = [];
    for (let i = 0; i < Math.max(replicas, 2); i++) names.push(cn.value.replace('$(POD_NAME)', `${sts.metadata.name}-${i}`));
    expect(new Set(names).size === names.length, `consumer names collide: ${names.join(', ')}`);
    for (const n of names) expect(/^\S{1,255}$/.test(n), `consumer name "${n}" would be rejected by the gateway`);
    expect(names[0] === `${v.config.consumerNamePrefix || ''}${fullname}-0`, `first consumer name is ${names[0]}`);
  });

  const secretName = v.secret.existingSecret || fullname;
  const chartSecret = docs.find((d) => d.kind === 'Secret' && d.metadata.name === fullname);

  check(`${tag} gateway: API token, Redis password and NATS credentials come from the Secret`, (expect) => {
    const useSecret = v.secret.existingSecret || v.secret.create;
    for (const [name, key] of Object.entries(SECRET_ENV)) {
      const e = env[name];
      const when = SECRET_ENV_WHEN[name] ? SECRET_ENV_WHEN[name](v) : true;
      const generated = key === 'apiToken' && v.secret.generateApiToken;
      const wanted = when && (v.secret.existingSecret || (v.secret.create && (v.secret[key] || generated)));
      if (!wanted) {
        expect(!e, `${name} is set although ${when ? 'no Secret key is in play' : 'the setting it belongs to is off'}`);
        continue;
      }
      if (!expect(e, `${name} is missing`)) continue;
      expect(nil(e.value), `${name} has a plain value`);
      const ref = e.valueFrom && e.valueFrom.secretKeyRef;
      expect(ref && ref.name === secretName && ref.key === v.secret.keys[key],
        `${name} is ${JSON.stringify(e.valueFrom)}, wanted key ${v.secret.keys[key]} of Secret ${secretName}`);
    }
    const files = { NATS_CREDS: ['natsCreds', v.nats.mountCreds], NATS_TLS_CA: ['natsTlsCA', v.nats.tls.mountCA] };
    for (const [name, [key, flag]] of Object.entries(files)) {
      const want = useSecret && (flag || (!v.secret.existingSecret && v.secret[key]));
      const e = env[name];
      if (!want) {
        expect(!e, `${name} is set without a file`);
        continue;
      }
      if (!expect(e && e.value, `${name} is missing`)) continue;
      const mount = (gw.volumeMounts || []).find((m) => e.value.startsWith(`${m.mountPath}/`));
      if (!expect(mount, `${name}=${e.value} is on no volume mount`)) continue;
      expect(mount.readOnly === true, `${name}'s mount is writable`);
      const vol = pod.spec.volumes.find((x) => x.name === mount.name);
      const item = vol && vol.secret && (vol.secret.items || []).find((it) => e.value === `${mount.mountPath}/${it.path}`);
      expect(vol && vol.secret && vol.secret.secretName === secretName && item && item.key === v.secret.keys[key],
        `${name} does not point at key ${v.secret.keys[key]} of Secret ${secretName}`);
    }
    // No secret value may show up anywhere but in the Secret itself.
    const others = docs.filter((d) => d.kind !== 'Secret').map((d) => JSON.stringify(d)).join('\n');
    for (const key of SECRET_VALUES) {
      const val = v.secret[key];
      if (val) expect(!others.includes(JSON.stringify(val).slice(1, -1)), `the value of secret.${key} leaks outside the Secret`);
    }
  });

  check(`${tag} Secret: made from values, or none when an existing one is named`, (expect) => {
    if (v.secret.existingSecret || !v.secret.create) {
      expect(!docs.some((d) => d.kind === 'Secret'), 'the chart renders a Secret although it should not');
      return;
    }
    if (!expect(chartSecret, `no Secret ${fullname}`)) return;
    const data = chartSecret.data || {};
    const generate = !v.secret.apiToken && v.secret.generateApiToken;
    const want = SECRET_VALUES.filter((k) => v.secret[k] || (k === 'apiToken' && generate));
    expect(Object.keys(data).sort().join() === want.map((k) => v.secret.keys[k]).sort().join(),
      `Secret keys ${Object.keys(data)} != ${want.map((k) => v.secret.keys[k])}`);
    for (const k of want.filter((k) => v.secret[k]))
      expect(Buffer.from(data[v.secret.keys[k]] || '', 'base64').toString() === v.secret[k], `Secret key for ${k} does not decode to its value`);
    if (generate)
      expect(/^[A-Za-z0-9]{40}$/.test(Buffer.from(data[v.secret.keys.apiToken] || '', 'base64').toString()),
        'no generated API token of 40 random letters and digits');
    expect((pod.metadata.annotations || {})['checksum/secret'], 'no checksum/secret annotation: pods would not roll on a Secret change');
  });

  check(`${tag} Service for the API and dashboard selects the gateway pods only`, (expect) => {
    const svc = docs.find((d) => d.kind === 'Service' && d.metadata.name === fullname);
    if (!expect(svc, `no Service ${fullname}`)) return;
    expect(svc.spec.type === v.service.type, `type ${svc.spec.type}`);
    const p = svc.spec.ports.find((x) => x.name === 'http');
    expect(p && p.port === v.service.port && p.targetPort === 'http', `port ${JSON.stringify(p)}`);
    for (const t of podTemplates(docs))
      expect(matches(svc.spec.selector, t.labels) === (t.doc === sts), `Service selector and ${id(t.doc)} disagree`);
  });

  // ------------------------------------------------- optional objects
  const one = (kind) => docs.filter((d) => d.kind === kind);
  const optional = [
    ['Ingress', v.ingress.enabled],
    ['HorizontalPodAutoscaler', v.autoscaling.enabled],
    ['PodDisruptionBudget', v.podDisruptionBudget.enabled],
    ['ServiceMonitor', v.metrics.serviceMonitor.enabled],
    ['NetworkPolicy', v.networkPolicy.enabled],
    ['PrometheusRule', v.metrics.prometheusRule.enabled],
  ];
  for (const [kind, on] of optional) {
    check(`${tag} ${kind} is rendered ${on ? 'and sound' : 'not at all (disabled)'}`, (expect) => {
      const objs = one(kind);
      if (!on) return expect(objs.length === 0, `${kind} rendered although disabled`);
      if (!expect(objs.length === 1, `${objs.length} ${kind} objects`)) return;
      const o = objs[0];
      if (kind === 'Ingress') {
        expect(o.spec.rules.length === v.ingress.hosts.length, 'one rule per host');
        for (const r of o.spec.rules)
          for (const p of r.http.paths)
            expect(p.backend.service.name === fullname && p.backend.service.port.number === v.service.port, `backend ${JSON.stringify(p.backend)}`);
        if (v.ingress.tls.length) expect(o.spec.tls && o.spec.tls.length === v.ingress.tls.length, 'TLS missing');
        if (v.ingress.className) expect(o.spec.ingressClassName === v.ingress.className, 'ingressClassName');
      } else if (kind === 'HorizontalPodAutoscaler') {
        const t = o.spec.scaleTargetRef;
        expect(t.kind === 'StatefulSet' && t.name === fullname && t.apiVersion === 'apps/v1', `scaleTargetRef ${JSON.stringify(t)}`);
        expect(o.spec.minReplicas === v.autoscaling.minReplicas && o.spec.maxReplicas === v.autoscaling.maxReplicas, 'min/max replicas');
        expect(o.spec.metrics.length > 0, 'no metrics');
      } else if (kind === 'PodDisruptionBudget') {
        expect(matches(o.spec.selector.matchLabels, pod.metadata.labels), 'selector misses the gateway pods');
        expect(nil(o.spec.minAvailable) !== nil(o.spec.maxUnavailable), 'needs exactly one of minAvailable, maxUnavailable');
      } else if (kind === 'ServiceMonitor') {
        const svcs = docs.filter((d) => d.kind === 'Service' && matches(o.spec.selector.matchLabels, d.metadata.labels));
        expect(svcs.length === 1 && svcs[0].metadata.name === fullname, `selects ${svcs.map(id).join(', ') || 'no Service'}; wanted only ${fullname}`);
        expect(o.spec.endpoints.some((e) => e.port === 'http' && e.path === '/metrics'), 'no /metrics endpoint on port http');
        for (const [k, val] of Object.entries(v.metrics.serviceMonitor.labels || {}))
          expect(o.metadata.labels[k] === val, `label ${k} missing`);
      } else if (kind === 'PrometheusRule') {
        const readme = fs.readFileSync(path.join(chartDir, 'README.md'), 'utf8');
        const rules = o.spec.groups.flatMap((g) => g.rules).filter((r) => r.alert);
        const names = new Set(rules.map((r) => r.alert));
        for (const a of ['FrameBufferConsumerLagGrowing', 'FrameBufferDLQRateHigh', 'FrameBufferProcessorDead',
          'FrameBufferNoHealthyProcessor', 'FrameBufferReplicaNotReady', 'FrameBufferNATSDown', 'FrameBufferRedisReconnecting'])
          expect(names.has(a), `no alert ${a}`);
        for (const r of rules) {
          const ann = r.annotations || {};
          expect(ann.summary && ann.description, `${r.alert}: summary or description missing`);
          expect(new RegExp(`^#+ ${r.alert}$`, 'm').test(readme), `${r.alert}: no runbook section "${r.alert}" in the chart README`);
          expect((ann.description || '').includes(r.alert), `${r.alert}: the description does not name its runbook section`);
          if (v.metrics.prometheusRule.runbookBaseUrl)
            expect(ann.runbook_url === `${v.metrics.prometheusRule.runbookBaseUrl}#${r.alert.toLowerCase()}`, `${r.alert}: runbook_url ${ann.runbook_url}`);
          expect(/frame_buffer_/.test(r.expr) && !/\{\s*\}/.test(r.expr), `${r.alert}: expression ${r.expr} selects no frame-buffer series of this release`);
          for (const [k, val] of Object.entries(v.metrics.prometheusRule.additionalLabels || {}))
            expect((r.labels || {})[k] === val, `${r.alert}: label ${k} missing`);
        }
        for (const [k, val] of Object.entries(v.metrics.prometheusRule.labels || {}))
          expect(o.metadata.labels[k] === val, `label ${k} missing`);
      } else if (kind === 'NetworkPolicy') {
        expect(matches(o.spec.podSelector.matchLabels, pod.metadata.labels), 'podSelector misses the gateway pods');
        expect(o.spec.ingress.some((r) => (r.ports || []).some((p) => p.port === 'http')), 'API port not allowed in');
        if (v.networkPolicy.restrictEgress) {
          const ports = o.spec.egress.flatMap((r) => (r.ports || []).map((p) => p.port));
          expect(ports.includes(53), 'DNS not allowed out');
          expect(ports.includes(v.redis.bundled.enabled ? 6379 : v.networkPolicy.redisPort), 'Redis not allowed out');
          if (v.redis.sentinel.enabled)
            for (const s of v.redis.sentinel.sentinels)
              expect(ports.includes(Number(s.split(':').pop())), `the sentinel ${s} is not allowed out`);
          if (v.nats.url !== 'none' || v.nats.bundled.enabled)
            expect(ports.includes(v.nats.bundled.enabled ? 4222 : v.networkPolicy.natsPort), 'NATS not allowed out');
        }
      }
    });
  }

  check(`${tag} Grafana dashboard ConfigMap ${v.metrics.grafanaDashboard.enabled ? 'for the sidecar, with a board that parses' : 'absent (disabled)'}`, (expect) => {
    const cm = docs.find((d) => d.kind === 'ConfigMap' && d.metadata.name === `${fullname}-dashboard`);
    if (!v.metrics.grafanaDashboard.enabled) return expect(!cm, 'rendered although disabled');
    if (!expect(cm, `no ConfigMap ${fullname}-dashboard`)) return;
    for (const [k, val] of Object.entries(v.metrics.grafanaDashboard.labels || {}))
      expect(cm.metadata.labels[k] === val, `sidecar label ${k}=${val} missing`);
    const board = JSON.parse(cm.data['frame-buffer.json']);
    expect(board.uid && board.title && Array.isArray(board.panels) && board.panels.length > 0, 'not a Grafana dashboard');
    const onDisk = JSON.parse(fs.readFileSync(path.join(chartDir, 'dashboards', 'frame-buffer.json'), 'utf8'));
    expect(JSON.stringify(board) === JSON.stringify(onDisk), 'the ConfigMap differs from dashboards/frame-buffer.json');
  });

  check(`${tag} prometheus.io scrape annotations ${v.metrics.podAnnotations ? 'on' : 'off'}`, (expect) => {
    const a = pod.metadata.annotations || {};
    if (v.metrics.podAnnotations)
      expect(a['prometheus.io/scrape'] === 'true' && a['prometheus.io/path'] === '/metrics' && a['prometheus.io/port'] === String(v.config.port), 'annotations missing');
    else expect(!a['prometheus.io/scrape'], 'annotations present although off');
  });

  // -------------------------------------------------- bundled servers
  for (const [server, port, on] of [['redis', 6379, v.redis.bundled.enabled], ['nats', 4222, v.nats.bundled.enabled]]) {
    check(`${tag} bundled ${server} ${on ? 'is a sound single-node StatefulSet with a Service' : 'is absent'}`, (expect) => {
      const name = `${fullname}-${server}`;
      const set = docs.find((d) => d.kind === 'StatefulSet' && d.metadata.name === name);
      const svc = docs.find((d) => d.kind === 'Service' && d.metadata.name === name);
      if (!on) return expect(!set && !svc, `${name} rendered although disabled`);
      if (!expect(set && svc, `StatefulSet and Service ${name} expected`)) return;
      expect(set.spec.replicas === 1, 'not single-node');
      expect(svc.spec.ports.some((p) => p.port === port), `Service has no port ${port}`);
      expect(matches(svc.spec.selector, set.spec.template.metadata.labels), 'Service selector misses its pod');
      expect(!matches(svc.spec.selector, pod.metadata.labels), 'Service selects the gateway pods');
      const c = set.spec.template.spec.containers[0];
      expect(c.livenessProbe && c.readinessProbe, 'probes missing');
      const persistent = v[server].bundled.persistence.enabled;
      expect(!!set.spec.volumeClaimTemplates === persistent, `volumeClaimTemplates ${persistent ? 'missing' : 'present'}`);
      if (server === 'nats') {
        const cm = docs.find((d) => d.kind === 'ConfigMap' && d.metadata.name === name);
        expect(cm && /jetstream\s*{/.test(cm.data['nats.conf']) && /store_dir:\s*\/data/.test(cm.data['nats.conf']), 'JetStream is not on in nats.conf');
      }
    });
  }

  if (gatewayBin) {
    check(`${tag} the built gateway takes the pod's environment, answers the probes, stops on SIGTERM in time`, (expect) => {
      const port = freePort();
      const penv = podEnv(envList, v, `${sts.metadata.name}-0`, port);
      penv.PORT = String(port);
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-probe-'));
      try {
        for (const f of ['NATS_CREDS', 'NATS_TLS_CA'])
          if (penv[f]) {
            const file = path.join(tmp, path.basename(penv[f]));
            if (f === 'NATS_TLS_CA') {
              // The gateway loads the CA at start and refuses one that is not a
              // certificate (exit 2), so the probe mounts a real one.
              const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
                '-subj', '/CN=frame-buffer-ci', '-keyout', path.join(tmp, 'ca.key'), '-out', file], { encoding: 'utf8' });
              if (!expect(r.status === 0, `openssl could not make a CA for the probe: ${r.stderr}`)) return;
            } else {
              fs.writeFileSync(file, v.secret.natsCreds || 'ci');
            }
            penv[f] = file;
          }
        const envFile = path.join(tmp, 'env.json');
        fs.writeFileSync(envFile, JSON.stringify(penv));
        // The kubelet waits terminationGracePeriodSeconds, preStop sleep included.
        const limit = Math.max(1, v.terminationGracePeriodSeconds - (v.preStopSleepSeconds || 0)) * 1000;
        const r = spawnSync(process.execPath, [path.join(__dirname, 'gateway-probe.js'), gatewayBin, envFile, String(port), String(limit)],
          { encoding: 'utf8', timeout: limit + 20000 });
        const res = JSON.parse(r.stdout || '{}');
        const tail = `\n--- gateway output ---\n${res.output_tail}`;
        if (!expect(!res.early_exit, `it exited at start with status ${res.code}${res.code === 2 ? ' (bad setting)' : ''}${tail}`)) return;
        expect(res.healthz === 200, `/healthz answered ${res.healthz}, wanted 200 (liveness)${tail}`);
        const down = penv.REDIS_SENTINELS ? 'Redis and its sentinels' : 'Redis';
        expect(res.readyz === 503, `/readyz answered ${res.readyz}, wanted 503 with ${down} down (readiness)${tail}`);
        expect(res.metrics === 200, `/metrics answered ${res.metrics}, wanted 200`);
        expect(res.stop_ms >= 0, `still running ${limit} ms after SIGTERM: the kubelet would kill it${tail}`);
        expect(res.code === 0, `exit status ${res.code} (signal ${res.signal}) after SIGTERM, wanted 0${tail}`);
      } finally {
        fs.rmSync(tmp, { recursive: true, force: true });
      }
    });
  }

  check(`${tag} helm test pod checks /readyz and is not selected as a gateway`, (expect) => {
    const t = docs.find((d) => d.kind === 'Pod' && ((d.metadata.annotations || {})['helm.sh/hook'] === 'test'));
    if (!expect(t, 'no helm test pod')) return;
    expect(JSON.stringify(t.spec.containers[0].args).includes(`http://${fullname}:${v.service.port}`), 'does not call the Service');
    expect(JSON.stringify(t.spec.containers[0].args).includes('/readyz'), 'does not check /readyz');
    expect(!matches(sts.spec.selector.matchLabels, t.metadata.labels), 'the test pod carries the gateway selector labels');
  });

  check(`${tag} NOTES.txt renders and says how to open the dashboard and register a processor`, (expect) => {
    const notes = renderNotes(release, ns, fileArgs);
    expect(!/<no value>/.test(notes), 'NOTES printed <no value>');
    if (v.ingress.enabled) expect(notes.includes(`FB_URL=http${v.ingress.tls.length ? 's' : ''}://${v.ingress.hosts[0].host}`), 'no Ingress URL');
    else if (v.service.type === 'ClusterIP') expect(notes.includes(`port-forward svc/${fullname}`), 'no port-forward line');
    expect(notes.includes('/api/v1/processors/register'), 'no registration example');
    expect(notes.includes('fb-processor'), 'no fb-processor example');
    const token = v.secret.existingSecret || v.secret.apiToken || (v.secret.create && v.secret.generateApiToken);
    expect(notes.includes('Authorization: Bearer') === !!token, 'Authorization header does not follow the API token');
    expect(/WARNING: no API token/.test(notes) === !token, 'the no-token warning does not follow the API token');
    expect(/Readiness \(\/readyz\)[^]*NATS being away does not make it unready/.test(notes), 'no word on what readiness means');
    if (v.redis.sentinel.enabled) {
      expect(notes.includes(`primary "${v.redis.sentinel.masterName}" from the Redis Sentinels ${v.redis.sentinel.sentinels.join(', ')}`), 'the Redis line does not name the sentinels and master');
      expect(notes.includes('SENTINEL get-master-addr-by-name'), 'no hint how the tools find the primary');
    }
    if (v.redis.waitReplicas > 0) expect(notes.includes(`waits (WAIT) for ${v.redis.waitReplicas} Redis replica(s)`), 'no word on redis.waitReplicas');
    if (nil(v.nats.jetstream) ? v.nats.bundled.enabled : v.nats.jetstream)
      expect(notes.includes(`stream FRAMES with ${v.nats.jetstreamReplicas} replica(s)`), 'no word on the stream replicas');
    if (keep) fs.writeFileSync(path.join(keep, `${setName}.NOTES.txt`), notes);
  });
}

/* The gateway binary of the first build found, as check-dockerfile.js finds it. */
const gatewayBin = [process.env.FB_BIN_DIR, path.join(repo, 'build', 'bin'), path.join(repo, 'build-test', 'bin')]
  .filter(Boolean)
  .map((d) => path.join(d, 'frame-buffer'))
  .find((f) => fs.existsSync(f));

function freePort() {
  const r = spawnSync(process.execPath, ['-e',
    'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'],
  { encoding: 'utf8' });
  return Number(r.stdout.trim());
}

/*
 * The environment the kubelet would give the gateway container: values,
 * $(VAR) references expanded, the downward-API pod name, Secret keys as the
 * values say (or a stand-in for an existing Secret). Redis, the Redis
 * sentinels and NATS point at closed loopback ports: nothing leaves this
 * machine, and the gateway must stay alive though not ready. Each sentinel
 * gets a port of its own (free a moment ago, and not `avoidPort`, the
 * gateway's), so a gateway that tries them in turn finds every one closed.
 */
function podEnv(envList, v, podName, avoidPort) {
  const out = { PATH: '/usr/bin:/bin' };
  for (const e of envList) {
    let val;
    if (!nil(e.value)) val = String(e.value).replace(/\$\((\w+)\)/g, (m, n) => (n in out ? out[n] : m));
    else if (e.valueFrom && e.valueFrom.fieldRef) val = podName;
    else if (e.valueFrom && e.valueFrom.secretKeyRef) {
      const key = Object.keys(v.secret.keys).find((k) => v.secret.keys[k] === e.valueFrom.secretKeyRef.key);
      val = (key && v.secret[key]) || `ci-${(key || 'secret').toLowerCase()}`;
    } else continue;
    out[e.name] = val;
  }
  if (out.REDIS_URL) out.REDIS_URL = out.REDIS_URL.replace(/^redis:\/\/([^@/]*@)?[^/]+/, (m, auth) => `redis://${auth || ''}127.0.0.1:9`);
  if (out.NATS_URL && out.NATS_URL !== 'none') out.NATS_URL = 'nats://127.0.0.1:9';
  if (out.REDIS_SENTINELS) {
    const ports = new Set();
    for (let i = 0; ports.size < out.REDIS_SENTINELS.split(',').length && i < 50; i++) {
      const p = freePort();
      if (p && p !== avoidPort) ports.add(p);
    }
    out.REDIS_SENTINELS = [...ports].map((p) => `127.0.0.1:${p}`).join(',');
  }
  return out;
}

/* helm template cannot print NOTES.txt: render it through tpl in a copy. */
function renderNotes(release, ns, fileArgs) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-notes-'));
  try {
    fs.cpSync(chartDir, path.join(tmp, 'frame-buffer'), { recursive: true });
    const c = path.join(tmp, 'frame-buffer');
    fs.copyFileSync(path.join(c, 'templates', 'NOTES.txt'), path.join(c, 'notes-src.txt'));
    fs.writeFileSync(path.join(c, 'templates', 'zz-notes.yaml'),
      'notes: {{ tpl (.Files.Get "notes-src.txt") . | toJson }}\n');
    const r = runHelm(['template', release, c, '--namespace', ns, '--show-only', 'templates/zz-notes.yaml', ...fileArgs]);
    if (r.code !== 0) throw new Error(`rendering NOTES.txt failed: ${r.err}`);
    return YAML.parse(r.out).notes;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

// ------------------------------------------------------- bad value sets

function checkBadValues() {
  const files = fs.existsSync(badDir) ? fs.readdirSync(badDir).filter((f) => f.endsWith('.yaml')).sort() : [];
  check('bad value sets exist', (expect) => expect(files.length > 0, `none in ${badDir}`));
  for (const f of files) {
    const file = path.join(badDir, f);
    const want = (fs.readFileSync(file, 'utf8').match(/^# expect: (.+)$/m) || [])[1];
    check(`[bad/${f}] rejected with "${want}"`, (expect) => {
      if (!expect(want, 'the file has no "# expect: <message>" line')) return;
      const r = runHelm(['template', 'fb', chartDir, '-f', file]);
      expect(r.code !== 0, 'helm template accepted it');
      expect(r.err.includes(want.trim()), `message was:\n${r.err.trim()}`);
      // helm lint only logs a template's `fail` (lint mode), so there the
      // message is enough; schema errors fail it outright.
      const l = runHelm(['lint', '--strict', chartDir, '-f', file]);
      expect(l.code !== 0 || (l.out + l.err).includes(want.trim()), 'helm lint --strict neither failed nor said why');
    });
  }
}

// ----------------------------------------------------------------- main

function main() {
  if (keep) fs.mkdirSync(keep, { recursive: true });
  check('helm is usable', (expect) => {
    const r = runHelm(['version', '--short']);
    expect(r.code === 0 && /^v3\./.test(r.out), `helm version: ${r.out}${r.err}`);
  });
  check('values.schema.json is valid JSON and covers every top-level value', (expect) => {
    const schema = JSON.parse(fs.readFileSync(path.join(chartDir, 'values.schema.json'), 'utf8'));
    const values = readYaml(path.join(chartDir, 'values.yaml'));
    for (const k of Object.keys(values)) expect(schema.properties[k], `values.${k} is not in the schema`);
    expect(schema.additionalProperties === false, 'the schema lets unknown top-level values through');
  });
  check('chart packages', (expect) => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-pkg-'));
    const r = runHelm(['package', chartDir, '-d', tmp]);
    expect(r.code === 0, r.err);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  checkValueSet('defaults', []);
  const ciDir = path.join(chartDir, 'ci');
  for (const f of fs.readdirSync(ciDir).filter((x) => x.endsWith('.yaml')).sort())
    checkValueSet(path.basename(f, '.yaml'), [path.join(ciDir, f)]);
  checkBadValues();

  require('./check-dockerfile.js').run(check);

  const scripts = fs.readdirSync(__dirname).filter((f) => f.endsWith('.sh')).map((f) => path.join(__dirname, f));
  const hasShellcheck = spawnSync('shellcheck', ['--version']).status === 0;
  check(`[scripts] shellcheck tools/ci/*.sh${hasShellcheck ? '' : ' (shellcheck not installed: skipped)'}`, (expect) => {
    if (!hasShellcheck) return;
    const r = spawnSync('shellcheck', scripts, { encoding: 'utf8' });
    expect(r.status === 0, r.stdout + r.stderr);
  });

  console.log(`chart: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();
