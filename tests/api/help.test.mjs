// dvv-api --help: one line for every option of api/main.c's table (defs[]), with the default the
// parser starts from, "(default: X)", where it has one; secrets and empty defaults show none.
// The table is read from the source, so an option added there is checked without editing this.

import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { test } from 'node:test'
import { REPO_ROOT, bin } from '../e2e/harness.mjs'

const STR = '"((?:[^"\\\\]|\\\\.)*)"'
// S(field, "def", "help") / K(...) secret / I(field, lo, hi, "def", "help") / B(field, "def", "help")
const ENTRY = new RegExp(`^\\s*(S|K|B)\\((\\w+), ${STR}, ${STR}\\),|^\\s*(I)\\((\\w+), [^,]+, [^,]+, ${STR}, ${STR}\\),`, 'gm')

/** api/main.c's opt_flag: field -> --flag */
function flagOf (field) {
  if (field === 'ca_pem_path') return 'ca-pem'
  if (field === 'reserved_path') return 'reserved'
  return field.replace(/_path$/, '').replace(/_/g, '-')
}

function table () {
  const src = fs.readFileSync(path.join(REPO_ROOT, 'api', 'main.c'), 'utf8')
  const start = src.indexOf('static const struct opt_def defs[] = {')
  const end = src.indexOf('};', start)
  assert.ok(start > 0 && end > start, 'defs[] not found in api/main.c')
  const body = src.slice(start, end)
  const out = []
  for (const m of body.matchAll(ENTRY)) {
    if (m[1]) out.push({ kind: m[1], field: m[2], def: m[3], help: m[4] })
    else out.push({ kind: m[5], field: m[6], def: m[7], help: m[8] })
  }
  // every entry line of the table was understood
  const entries = body.split('\n').filter((l) => /^\s*[SKIB]\(/.test(l)).length
  assert.equal(out.length, entries, `parsed ${out.length} of the ${entries} entries of defs[]`)
  return out
}

test('dvv-api --help shows every option of its table with its real default', () => {
  const help = execFileSync(bin('dvv-api'), ['--help'], { encoding: 'utf8' })
  const lines = help.split('\n').filter((l) => l.startsWith('  --'))
  const defs = table()
  assert.ok(defs.length >= 30, `expected the whole table, got ${defs.length} entries`)
  for (const d of defs) {
    const flag = flagOf(d.field)
    const line = lines.find((l) => l.startsWith(`  --${flag} `))
    assert.ok(line, `--help has no line for --${flag}`)
    if (d.kind === 'K' || d.def === '') {
      assert.ok(!line.includes('(default:'), `--${flag} has no default (or is a secret) but shows one: ${line}`)
    } else {
      assert.ok(line.endsWith(`(default: ${d.def})`), `--${flag}: expected "(default: ${d.def})" at the end of: ${line}`)
    }
  }
  // nothing in the help that is not in the table (besides --help itself)
  const flags = new Set(defs.map((d) => flagOf(d.field)))
  for (const l of lines) {
    const f = /^ {2}--([a-z0-9-]+)/.exec(l)[1]
    assert.ok(f === 'help' || flags.has(f), `--help shows --${f}, which is not in defs[]`)
  }
})
