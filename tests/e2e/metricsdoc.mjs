// Reads the metric tables of docs/metrics.md and a Prometheus text exposition, and compares
// them: shared by tests/e2e/metrics.test.mjs (the relay), tests/api/metrics.test.mjs (dvv-api)
// and tests/ops (the dashboard and alert rules).
//
// Table rows look like: | `name` | type | labels | exposed | meaning | action |
// labels: "`label`: v1, v2, ...; `other`: ..." (or "as above": the previous row's values).

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
export const METRICS_MD = path.resolve(here, '..', '..', 'docs', 'metrics.md')

/** {name: {type, labels: {label: Set|null}, exposed, section}} for every metric row. */
export function documentedMetrics (md = fs.readFileSync(METRICS_MD, 'utf8')) {
  const out = {}
  let section = ''
  let prevLabels = {}
  for (const line of md.split('\n')) {
    const h = /^## (.*)$/.exec(line)
    if (h) section = h[1].trim()
    const m = /^\| `([a-z_:][a-z0-9_:]*)` \| ([a-z]+) \|\s*([^|]*?)\s*\|\s*([a-z]+)\s*\|/.exec(line)
    if (!m) continue
    const [, name, type, labelCell, exposed] = m
    let labels = {}
    if (/as above/.test(labelCell)) {
      labels = prevLabels
      // a cell may add labels after "as above"
      for (const [k, v] of Object.entries(parseLabels(labelCell.replace(/[^;]*as above;?/, '')))) labels = { ...labels, [k]: v }
    } else {
      labels = parseLabels(labelCell)
    }
    prevLabels = labels
    if (out[name]) throw new Error(`docs/metrics.md lists ${name} twice`)
    out[name] = { type, labels, exposed, section }
  }
  return out
}

function parseLabels (cell) {
  const labels = {}
  if (/one series/.test(cell)) { // free-form labels (dvv_relay_info): any value
    for (const m of cell.matchAll(/`([a-z_]+)`/g)) labels[m[1]] = null
    return labels
  }
  for (const part of cell.split(';')) {
    const m = /`([a-z_]+)`(?::\s*(.*))?/.exec(part)
    if (!m) continue
    const values = (m[2] || '').split(',').map((s) => s.trim()).filter((s) => s && !/\s/.test(s))
    labels[m[1]] = values.length ? new Set(values) : null
  }
  return labels
}

/** Parse a text exposition: {families: {name: type}, samples: [{name, family, labels}]} */
export function parseExposition (text) {
  const families = {}
  const samples = []
  for (const line of text.split('\n')) {
    const t = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (t) { families[t[1]] = t[2]; continue }
    if (!line || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`not a Prometheus sample line: ${JSON.stringify(line)}`)
    const labels = {}
    if (m[2]) {
      for (const kv of m[2].match(/[a-zA-Z_]+="(?:[^"\\]|\\.)*"/g) || []) {
        const i = kv.indexOf('=')
        labels[kv.slice(0, i)] = kv.slice(i + 2, -1)
      }
    }
    const family = Object.hasOwn(families, m[1]) ? m[1] : m[1].replace(/_(bucket|sum|count)$/, '')
    samples.push({ name: m[1], family, labels, value: Number(m[3]) })
  }
  return { families, samples }
}

/**
 * Compare an exposition with the documented metrics of one prefix. Returns a list of problems
 * (empty when they agree). expect(row) says whether a documented row must be exposed here.
 */
export function compare (doc, expo, { prefix, expect }) {
  const problems = []
  for (const [name, type] of Object.entries(expo.families)) {
    if (!name.startsWith(prefix)) continue
    const d = doc[name]
    if (!d) { problems.push(`${name} is exposed but not documented in docs/metrics.md`); continue }
    if (d.type !== type) problems.push(`${name} is a ${type}, docs/metrics.md says ${d.type}`)
  }
  for (const [name, d] of Object.entries(doc)) {
    if (!name.startsWith(prefix) || !expect(d)) continue
    if (!Object.hasOwn(expo.families, name)) problems.push(`${name} is documented (exposed: ${d.exposed}) but not exposed`)
  }
  for (const s of expo.samples) {
    if (!s.name.startsWith(prefix)) continue
    const d = doc[s.family]
    if (!d) continue
    for (const [k, v] of Object.entries(s.labels)) {
      if (!Object.hasOwn(d.labels, k)) { problems.push(`${s.name} has label ${k}, not documented`); continue }
      const allowed = d.labels[k]
      if (allowed && !allowed.has(v)) problems.push(`${s.name}{${k}="${v}"}: value not in the documented set`)
    }
  }
  return problems
}
