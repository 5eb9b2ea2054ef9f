// BPF pins of dead relays: with the default instance id (<hostname>-<pid>) a relay that crashed
// leaves /sys/fs/bpf/dvv/<hostname>-<pid>/ behind, and no later relay has that id. A relay that
// starts on the bpf plane removes those directories of this host whose pid is gone, and nothing
// else. Needs root (bpffs) and bpftool; always runs the bpf plane, whatever DVV_DATAPLANE says.
//
//   node --test --test-concurrency=1 tests/e2e/pins.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import * as h from './harness.mjs'

const ROOT = '/sys/fs/bpf/dvv' // the relay's default --bpf-pin-root
// the host part of the relay's default instance id (userspace/config.c: relay_cfg_default_host)
const HOST = os.hostname().slice(0, 47).replace(/[^A-Za-z0-9-]/g, '-') || 'relay'

let keys, redis
const created = new Set() // every directory this file made (or made a relay make) under ROOT

function alive (pid) {
  try { process.kill(pid, 0); return true } catch (e) { return e.code !== 'ESRCH' }
}

function deadPid (from) {
  for (let pid = from; pid < from + 1000; pid++) if (!alive(pid)) return pid
  throw new Error(`no dead pid found from ${from}`)
}

/** A directory under ROOT holding one pinned map, as a relay's pin directory does. */
function pinDir (name) {
  const dir = path.join(ROOT, name)
  created.add(dir)
  fs.mkdirSync(dir, { recursive: true })
  execFileSync('bpftool', ['map', 'create', path.join(dir, 'dvv_pairs'), 'type', 'array',
    'key', '4', 'value', '4', 'entries', '1', 'name', 'dvv_e2e_pin'])
  return dir
}

const relayBpf = () => h.startRelay({ redisPort: redis.port, keys, instanceId: null, extraArgs: ['--dataplane', 'bpf'] })

before(h.withLogs('setup', async () => {
  if (process.getuid() !== 0) throw new Error('needs root: pins live on bpffs (run as root, as CI does)')
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  fs.mkdirSync(ROOT, { recursive: true })
}), { timeout: 60000 })

after(async () => {
  await h.cleanup()
  for (const d of created) fs.rmSync(d, { recursive: true, force: true })
})

h.scenario('a relay on the bpf plane removes pin dirs of dead relays of this host, only those', async () => {
  const dead = deadPid(4194000)
  const stale = pinDir(`${HOST}-${dead}`)
  const live = pinDir(`${HOST}-${process.pid}`) // this test process: alive
  const other = pinDir(`e2e-other-${dead}`) // dead pid, but not a default id of this host
  const suffixed = pinDir(`${HOST}-${dead}-x`)

  const relay = await relayBpf()
  created.add(path.join(ROOT, `${HOST}-${relay.pid}`))
  assert.ok(!fs.existsSync(stale), `expected ${stale} (pid ${dead} is not running) to be removed`)
  for (const d of [live, other, suffixed]) {
    assert.ok(fs.existsSync(path.join(d, 'dvv_pairs')), `expected ${d} and its pin to be left alone`)
  }
  const own = path.join(ROOT, `${HOST}-${relay.pid}`)
  assert.ok(fs.existsSync(own), `expected the relay's own pin directory ${own}`)
  const log = fs.readFileSync(relay.proc.stderrLog, 'utf8')
  assert.match(log, new RegExp(`stale pins: removed ${stale}/? with 1 pin\\(s\\)`))

  const rl = await h.stopProcess(relay.proc)
  assert.ok(!rl.forced && rl.code === 0, `expected the relay to exit 0 on SIGTERM, got ${JSON.stringify(rl)}`)
  assert.ok(!fs.existsSync(own), `expected a clean exit to remove ${own}`)
  for (const d of [live, other, suffixed]) fs.rmSync(d, { recursive: true, force: true })
})

h.scenario('the pins of a relay killed with SIGKILL are gone after the next start', async () => {
  const first = await relayBpf()
  const left = path.join(ROOT, `${HOST}-${first.pid}`)
  created.add(left)
  await h.kill9(first.proc)
  assert.ok(fs.existsSync(left), `expected the killed relay to leave ${left} behind`)
  const second = await relayBpf()
  created.add(path.join(ROOT, `${HOST}-${second.pid}`))
  assert.ok(!fs.existsSync(left), `expected the next relay to remove ${left}`)
  const rl = await h.stopProcess(second.proc)
  assert.ok(!rl.forced && rl.code === 0, `expected the relay to exit 0 on SIGTERM, got ${JSON.stringify(rl)}`)
})

h.scenario('no sanitizer report', async () => {
  const reports = h.sanitizerReports()
  assert.deepEqual(reports, [], `expected no sanitizer reports, got:\n${reports.map((r) => `${r.name}: ${r.line}`).join('\n')}`)
})
