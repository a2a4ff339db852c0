#!/usr/bin/env node
// Checks of the Dockerfile without building it (tools/ci/image-test.sh builds
// and runs it where podman is installed); Debian has no hadolint, so
// dockerfile-utils' linter for the syntax,
// then the rules this image lives by (hadolint's where they apply), and the
// package lists kept in step: tools/ci/packages.txt (build) is what both the
// Dockerfile and .ci/run install, and tools/ci/runtime-packages.txt must hold
// the shared library of every -dev package and of every library the built
// binaries load. Run by check-chart.js; also runnable alone.
'use strict';

const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const repo = path.resolve(__dirname, '..', '..');
const here = __dirname;

/* Package names in a list file, with the comment of each line. */
function readList(file) {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => {
      const [name, ...rest] = l.split('#');
      return { name: name.trim(), comment: rest.join('#').trim() };
    })
    .filter((p) => p.name);
}

/* Dockerfile instructions: comments dropped, continuation lines joined. */
function parseDockerfile(text) {
  const out = [];
  let cur = null;
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (cur === null && /^\s*(#|$)/.test(line)) return;
    if (cur !== null && /^\s*#/.test(line)) return;
    const body = line.replace(/\\\s*$/, '');
    cur = cur === null ? { text: body.trim(), line: i + 1 } : { ...cur, text: `${cur.text} ${body.trim()}` };
    if (!/\\\s*$/.test(line)) {
      const m = cur.text.match(/^(\S+)\s*(.*)$/);
      out.push({ keyword: m[1].toUpperCase(), args: m[2], line: cur.line });
      cur = null;
    }
  });
  return out;
}

function sh(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { code: r.error ? -1 : r.status, out: r.stdout || '', err: r.stderr || '' };
}

function run(check) {
  const dockerfile = path.join(repo, 'Dockerfile');
  const text = fs.readFileSync(dockerfile, 'utf8');
  const ins = parseDockerfile(text);
  const buildList = readList(path.join(here, 'packages.txt'));
  const runtimeList = readList(path.join(here, 'runtime-packages.txt'));
  const runtimeNames = new Set(runtimeList.map((p) => p.name));

  // Stages: [{name, from, ins: [...]}]
  const args = {};
  const stages = [];
  for (const i of ins) {
    if (i.keyword === 'ARG' && stages.length === 0) {
      const m = i.args.match(/^(\w+)=(\S+)/);
      if (m) args[m[1]] = m[2].replace(/^"|"$/g, '');
    } else if (i.keyword === 'FROM') {
      const m = i.args.match(/^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?/i);
      const image = m[1].replace(/\$\{?(\w+)\}?/g, (_, a) => args[a] || `<unset ${a}>`);
      stages.push({ name: m[2] || String(stages.length), from: image, ins: [] });
    } else if (stages.length) stages[stages.length - 1].ins.push(i);
  }
  const build = stages[0];
  const final = stages[stages.length - 1];
  const runsOf = (st) => st.ins.filter((i) => i.keyword === 'RUN').map((i) => i.args);

  check('[dockerfile] dockerfile-utils lint: no problems', (expect) => {
    const du = require('dockerfile-utils');
    const W = du.ValidationSeverity.WARNING;
    const settings = {
      deprecatedMaintainer: W, emptyContinuationLine: W, instructionCasing: W,
      instructionCmdMultiple: W, instructionEntrypointMultiple: W,
      instructionHealthcheckMultiple: W, instructionJSONInSingleQuotes: W, instructionWorkdirRelative: W,
    };
    for (const d of du.validate(text, settings))
      expect(false, `line ${d.range.start.line + 1}: ${d.message}`);
  });

  check('[dockerfile] multi-stage on a pinned Debian 12 base', (expect) => {
    expect(stages.length >= 2, `${stages.length} stage(s); wanted a build and a runtime stage`);
    for (const s of stages) {
      if (/^\w+$/.test(s.from) && stages.some((o) => o.name === s.from)) continue;
      expect(/^(docker\.io\/(library\/)?)?debian:(12|bookworm)([.-][\w.-]*)?(@sha256:[a-f0-9]{64})?$/.test(s.from),
        `stage ${s.name}: base ${s.from} is not a pinned Debian 12 image (DL3006/DL3007)`);
    }
  });

  check('[dockerfile] build and runtime stages install from the tools/ci package lists, and nothing else', (expect) => {
    const copies = (st, list) => st.ins.some((i) => i.keyword === 'COPY' && i.args.includes(`tools/ci/${list}`));
    expect(copies(build, 'packages.txt') && runsOf(build).some((r) => /install-packages\.sh .*packages\.txt/.test(r)),
      'the build stage does not install tools/ci/packages.txt with install-packages.sh');
    expect(copies(final, 'runtime-packages.txt') && runsOf(final).some((r) => /install-packages\.sh .*runtime-packages\.txt/.test(r)),
      'the runtime stage does not install tools/ci/runtime-packages.txt with install-packages.sh');
    for (const st of stages)
      for (const r of runsOf(st)) {
        expect(!/apt-get\s+(-\S+\s+)*install/.test(r), `stage ${st.name}: apt-get install outside the lists: ${r}`);
        expect(!/apt-get\s+(-\S+\s+)*(dist-)?upgrade/.test(r), `stage ${st.name}: apt-get upgrade (DL3005)`);
        if (/install-packages\.sh|apt-get/.test(r))
          expect(/rm -rf \/var\/lib\/apt\/lists/.test(r), `stage ${st.name}: apt lists not removed in the same RUN (DL3009)`);
      }
    const script = fs.readFileSync(path.join(here, 'install-packages.sh'), 'utf8');
    expect(/apt-get install -y\b.*--no-install-recommends/.test(script), 'install-packages.sh does not use -y --no-install-recommends (DL3014/DL3015)');
  });

  check('[dockerfile] runtime stage: tools in, non-root numeric USER, gateway as exec-form ENTRYPOINT', (expect) => {
    const buildText = runsOf(build).join('\n');
    for (const bin of ['frame-buffer', 'fb-processor', 'fb-inject'])
      expect(new RegExp(`bin/${bin}\\b`).test(buildText), `the build stage does not install ${bin}`);
    expect(final.ins.some((i) => i.keyword === 'COPY' && new RegExp(`--from=${build.name}\\b`).test(i.args)),
      `the runtime stage copies nothing from stage ${build.name}`);
    const users = final.ins.filter((i) => i.keyword === 'USER');
    const user = users.length ? users[users.length - 1].args.trim() : '';
    const uid = user.split(':')[0];
    expect(/^[0-9]+$/.test(uid) && Number(uid) > 0, `final USER "${user}" is not a numeric non-root uid (DL3002; runAsNonRoot needs a number)`);
    const eps = final.ins.filter((i) => i.keyword === 'ENTRYPOINT');
    let ep = null;
    try {
      ep = eps.length === 1 ? JSON.parse(eps[0].args) : null;
    } catch (e) {
      ep = null;
    }
    expect(Array.isArray(ep) && /(^|\/)frame-buffer$/.test(ep[0]), `ENTRYPOINT is not ["…/frame-buffer"] in exec form: ${eps.map((e) => e.args)}`);
    const values = require('yaml').parse(fs.readFileSync(path.join(repo, 'charts/frame-buffer/values.yaml'), 'utf8'));
    expect(final.ins.some((i) => i.keyword === 'EXPOSE' && i.args.split(/\s+/).includes(String(values.config.port))),
      `no EXPOSE ${values.config.port}`);
    expect(String(values.podSecurityContext.runAsUser) === uid, `chart runAsUser ${values.podSecurityContext.runAsUser} != image USER ${uid}`);
    for (const i of ins) {
      expect(i.keyword !== 'ADD' || /^--/.test(i.args), `line ${i.line}: ADD instead of COPY (DL3020)`);
      if (i.keyword === 'WORKDIR') expect(i.args.startsWith('/'), `line ${i.line}: relative WORKDIR (DL3000)`);
      if (i.keyword === 'RUN') expect(!/(^|\s)cd\s/.test(i.args), `line ${i.line}: cd in RUN; use WORKDIR (DL3003)`);
      if (i.keyword === 'RUN') expect(!/\bsudo\b/.test(i.args), `line ${i.line}: sudo (DL3004)`);
    }
  });

  check('[dockerfile] .dockerignore keeps the context small but the package lists in', (expect) => {
    const ign = fs.readFileSync(path.join(repo, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    for (const p of ['.git', 'build*']) expect(ign.includes(p), `.dockerignore does not exclude ${p}`);
    for (const p of ign)
      if (p && !p.startsWith('#') && !p.startsWith('!'))
        for (const need of ['tools/ci/packages.txt', 'tools/ci/runtime-packages.txt', 'tools/ci/install-packages.sh', 'CMakeLists.txt', 'gateway/main.c'])
          expect(!(need === p || need.startsWith(`${p.replace(/\/$/, '')}/`)), `.dockerignore excludes ${need} (${p})`);
  });

  // ------------------------------------------------ the package lists
  check('[packages] both lists name Debian 12 packages that exist', (expect) => {
    for (const { name } of [...buildList, ...runtimeList]) {
      const installed = sh('dpkg-query', ['-W', '-f=${db:Status-Status}', name]).out === 'installed';
      if (installed) continue;
      const pol = sh('apt-cache', ['policy', name]).out;
      expect(/Candidate: (?!\(none\))/.test(pol), `${name}: no such package (apt-cache policy has no candidate)`);
    }
  });

  check('[packages] every runtime library of a -dev build package is in runtime-packages.txt', (expect) => {
    for (const p of buildList.filter((x) => /-dev$/.test(x.name))) {
      if (/tests only/i.test(p.comment)) continue;
      const files = sh('dpkg-query', ['-L', p.name]);
      if (!expect(files.code === 0, `${p.name} is not installed: run tools/ci/install-packages.sh first`)) continue;
      const sos = files.out.split('\n').filter((f) => /\/lib[^/]*\.so$/.test(f));
      expect(sos.length > 0, `${p.name} ships no lib*.so link`);
      for (const so of sos) {
        let target;
        try {
          target = fs.realpathSync(so);
        } catch (e) {
          expect(false, `${so} (${p.name}) is a dangling link`);
          continue;
        }
        const owner = sh('dpkg-query', ['-S', target]).out.split(':')[0];
        expect(owner && runtimeNames.has(owner), `${p.name} links against ${path.basename(target)} from ${owner || 'no package'}, which runtime-packages.txt lacks`);
      }
    }
  });

  // The binaries of the first build found: FB_BIN_DIR, build/bin (the
  // README's build), build-test/bin (tools/dev/test.sh's, as in CI).
  const binDir = [process.env.FB_BIN_DIR, path.join(repo, 'build', 'bin'), path.join(repo, 'build-test', 'bin')]
    .find((d) => d && fs.existsSync(path.join(d, 'frame-buffer')));
  const bins = binDir ? ['frame-buffer', 'fb-processor', 'fb-inject'].map((b) => path.join(binDir, b)).filter((f) => fs.existsSync(f)) : [];
  check(`[packages] the built binaries${binDir ? ` in ${path.relative(repo, binDir) || binDir}` : ''} load only libraries from runtime-packages.txt${bins.length ? '' : ' (no build found: skipped)'}`, (expect) => {
    // What debian:bookworm-slim already has: a minbase system, i.e. the
    // Essential and "required" packages and everything they depend on.
    const base = new Set();
    if (bins.length) {
      const ess = sh('dpkg-query', ['-W', '-f=${Package} ${Essential} ${Priority}\n']).out
        .split('\n').map((l) => l.split(' ')).filter((f) => f[1] === 'yes' || f[2] === 'required').map((f) => f[0]);
      const deps = sh('apt-cache', ['depends', '--recurse', '--no-recommends', '--no-suggests', '--no-conflicts',
        '--no-breaks', '--no-replaces', '--no-enhances', ...ess]);
      for (const l of deps.out.split('\n')) if (/^[^\s<]/.test(l)) base.add(l.split(':')[0]);
      expect(base.has('libc6'), 'could not work out the base image packages (apt-cache depends)');
    }
    for (const b of bins) {
      const ldd = sh('ldd', [b]);
      if (!expect(ldd.code === 0, `ldd ${b}: ${ldd.err}`)) continue;
      for (const line of ldd.out.split('\n')) {
        const m = line.match(/^\s*(\S+) => (\S+)/);
        if (!m) continue;
        expect(m[2] !== 'not', `${path.basename(b)}: ${m[1]} not found`);
        if (m[2] === 'not') continue;
        // Ask dpkg about the path as the loader found it, and as resolved.
        let owner = sh('dpkg-query', ['-S', m[2]]).out.split(':')[0];
        if (!owner) owner = sh('dpkg-query', ['-S', fs.realpathSync(m[2])]).out.split(':')[0];
        if (!owner) {
          expect(false, `${path.basename(b)}: ${m[2]} belongs to no Debian package`);
          continue;
        }
        // Only direct dependencies matter: apt pulls in the rest.
        const direct = sh('readelf', ['-d', b]).out.includes(`[${m[1]}]`);
        if (!direct || base.has(owner)) continue;
        expect(runtimeNames.has(owner), `${path.basename(b)} needs ${m[1]} from ${owner}, which runtime-packages.txt lacks`);
      }
    }
  });

  check('[packages] .ci/run installs the build packages from tools/ci/packages.txt, not a list of its own', (expect) => {
    const ciRun = path.join(repo, '.ci', 'run');
    if (!expect(fs.existsSync(ciRun), '.ci/run does not exist')) return;
    const ci = fs.readFileSync(ciRun, 'utf8');
    expect(/tools\/ci\/(install-packages\.sh|packages\.txt)/.test(ci),
      '.ci/run neither runs tools/ci/install-packages.sh nor reads tools/ci/packages.txt');
    const aptLines = ci.split('\n').filter((l) => /apt-get\s+(-\S+\s+)*install/.test(l));
    for (const p of buildList.filter((x) => /-dev$/.test(x.name)))
      for (const l of aptLines)
        expect(!new RegExp(`(^|\\s)${p.name.replace(/[.+]/g, '\\$&')}(\\s|$)`).test(l),
          `.ci/run installs ${p.name} itself; let tools/ci/packages.txt be the one list: ${l.trim()}`);
  });
}

module.exports = { run, readList, parseDockerfile };

if (require.main === module) {
  let passed = 0;
  let failed = 0;
  const check = (name, fn) => {
    const errors = [];
    try {
      fn((c, m) => (c ? true : (errors.push(m), false)));
    } catch (e) {
      errors.push(`threw: ${e.stack || e}`);
    }
    if (errors.length) failed++;
    else passed++;
    console.log(`${errors.length ? 'FAIL' : 'ok  '} ${name}`);
    for (const e of errors) console.log(`       ${e}`);
  };
  run(check);
  console.log(`dockerfile: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}
