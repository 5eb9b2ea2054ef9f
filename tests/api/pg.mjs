// A throwaway PostgreSQL 15 cluster for one test file: initdb in a temp dir, started on a free
// port with pg_ctl, stopped and removed by stopPg() (and on process exit). As root it runs as
// the postgres user (PostgreSQL refuses root) through `runuser -u postgres --`, on a temp dir
// owned by postgres; as another user it runs as that user.

import { execFile, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import process from 'node:process'
import { freePort } from '../e2e/harness.mjs'

const clusters = new Set()

function pgBin (name) {
  for (const v of ['15', '16', '17', '14']) {
    const p = `/usr/lib/postgresql/${v}/bin/${name}`
    if (fs.existsSync(p)) return p
  }
  return name
}

const asRoot = process.getuid && process.getuid() === 0

function wrap (cmd, args) {
  return asRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]
}

function run (cmd, args, { timeoutMs = 60000 } = {}) {
  const [c, a] = wrap(cmd, args)
  return new Promise((resolve, reject) => {
    execFile(c, a, { timeout: timeoutMs, cwd: '/' }, (err, stdout, stderr) => {
      if (err) {
        err.message = `${cmd} ${args.join(' ')}: ${err.message}\n${stdout}\n${stderr}`
        return reject(err)
      }
      resolve(stdout)
    })
  })
}

/** Start a cluster; resolves {dir, port, conninfo(db), createDb(name), psql(db, sql), stop()}. */
export async function startPg () {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvv-pg-'))
  fs.chmodSync(dir, 0o700)
  if (asRoot) execFileSync('chown', ['postgres:postgres', dir])
  const data = path.join(dir, 'data')
  const port = await freePort()
  await run(pgBin('initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync', '-N'])
  const opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200`
  const pg = {
    dir,
    port,
    stopped: false,
    conninfo: (db = 'postgres') => `host=127.0.0.1 port=${port} user=postgres dbname=${db} connect_timeout=5`,
    createDb: async (name) => {
      await run(pgBin('psql'), ['-h', dir, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-qAt', '-c', `CREATE DATABASE "${name}"`])
      return pg.conninfo(name)
    },
    /** Rows of a query as arrays of strings ('|' separated by psql -At). */
    psql: async (db, sql) => {
      const out = await run(pgBin('psql'), ['-h', dir, '-p', String(port), '-U', 'postgres', '-d', db, '-v', 'ON_ERROR_STOP=1', '-qAt', '-c', sql])
      return out.split('\n').filter((l) => l !== '').map((l) => l.split('|'))
    },
    stop: () => stopOne(pg),
    /** Stops the server (immediate: connections cut as by a crash), keeping its data. A
     *  CHECKPOINT first: this throwaway cluster runs with synchronous_commit=off, so commits of
     *  the last few hundred ms would otherwise be lost, which a production server does not do. */
    pause: async () => {
      await pg.psql('postgres', 'CHECKPOINT')
      await run(pgBin('pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop'])
    },
    /** Starts it again on the same port and data. */
    resume: () => run(pgBin('pg_ctl'), ['-D', data, '-o', opts, '-l', path.join(dir, 'log'), '-w', '-t', '60', 'start'])
  }
  pg.data = data
  clusters.add(pg)
  await run(pgBin('pg_ctl'), ['-D', data, '-o', opts, '-l', path.join(dir, 'log'), '-w', '-t', '60', 'start'])
  return pg
}

function stopOne (pg, sync = false) {
  if (pg.stopped) return Promise.resolve()
  pg.stopped = true
  clusters.delete(pg)
  const [c, a] = wrap(pgBin('pg_ctl'), ['-D', pg.data, '-m', 'immediate', '-w', 'stop'])
  try { execFileSync(c, a, { stdio: 'ignore', timeout: 30000, cwd: '/' }) } catch {}
  if (!process.env.DVV_E2E_KEEP) {
    try { fs.rmSync(pg.dir, { recursive: true, force: true }) } catch {}
  }
  return sync ? undefined : Promise.resolve()
}

export async function stopAllPg () {
  for (const pg of [...clusters]) await stopOne(pg)
}

process.on('exit', () => { for (const pg of [...clusters]) stopOne(pg, true) })
