// The dashboard (api/web) end to end in a real headless browser against the real dvv-api,
// PostgreSQL and Redis: Debian's chromium driven through the DevTools protocol by puppeteer-core
// (installed in tests/e2e, never downloads a browser).
//
//   node --test tests/api/dashboard.test.mjs        (DVV_BUILD=build-san by default)
//
// A user signs up in the page (a hostile email stays text), sees the free plan and the first
// tunnel, sees live state refresh in place, creates a token (the command shown once, copied with
// the button) and runs that command for real (dvv login + dvv against a real relay that trusts
// the API's key; a Minecraft player joins), revokes it (Redis learns it, the agent exits 3), is
// refused a second tunnel with the plan-limit message, upgrades through checkout on the Stripe
// stand-in's page and sees the paid plan appear, reserves a custom subdomain, creates and deletes
// a second tunnel, sees usage, the capped state and a past-due payment, and logs out; then the
// rate-limit message. On failure a screenshot and
// the page's HTML land in the test's temp dir (kept, path printed; DVV_WEB_SHOTS=1: every step).

import assert from 'node:assert/strict'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import process from 'node:process'
import { after, before } from 'node:test'

import { execFile } from 'node:child_process'

import {
  REPO_ROOT, bin, makeTempDir, scenario, sleep, spawnProcess, startMcServer, startRedis, startRelay,
  waitForLine, withLogs
} from '../e2e/harness.mjs'
import { join, stayingPlayer } from '../e2e/mc-client.mjs'
import { apiKeys, cleanupApi, redis, startApi, until } from './api.mjs'
import { startPg } from './pg.mjs'
import { startStandin } from './stripe-standin.mjs'

const requireE2e = createRequire(path.join(REPO_ROOT, 'tests', 'e2e', 'package.json'))
const CHROMIUM = process.env.DVV_CHROMIUM || '/usr/bin/chromium'
const PREFIX = 'dvv:'
const STRIPE_KEY = 'sk_test_dashboard'
const STRIPE_WHSEC = 'whsec_dashboard'

const env = { pageErrors: [], dialogs: [] }

function jwtPayload (token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'))
}

const until5s = (fn, what) => until(fn, { timeoutMs: 5000, intervalMs: 100, what })

// ------------------------------------------------------------------------------- the browser

let browser = null
let page = null
let shotDir = null
const requests = [] // every request the page made: {url, method, headers}

async function launchBrowser () {
  const puppeteer = (await import(requireE2e.resolve('puppeteer-core'))).default
  shotDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvv-web-shots-'))
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    pipe: true,
    userDataDir: path.join(shotDir, 'profile'),
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  page = await browser.newPage()
  page.setDefaultTimeout(15000)
  page.on('request', (r) => requests.push({ url: r.url(), method: r.method(), headers: r.headers() }))
  page.on('pageerror', (e) => { env.pageErrors.push(e.message) })
  page.on('dialog', (d) => { env.dialogs.push(d.message()); d.dismiss() })
  await page.setViewport({ width: 1100, height: 900 })
}

/** Screenshot + HTML of the page after a failure; the dir is kept and printed. */
async function evidence (name) {
  if (!page) return
  const base = path.join(shotDir, name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60))
  try { await page.screenshot({ path: `${base}.png`, fullPage: true }) } catch {}
  try { fs.writeFileSync(`${base}.html`, await page.content()) } catch {}
  env.keepShots = true
  process.stderr.write(`[dashboard] screenshot and HTML of the page: ${base}.png / .html\n`)
}

/** scenario() that also leaves a screenshot when the step fails. */
function step (name, fn) {
  return scenario(name, { timeout: 90000 }, async (t) => {
    try {
      await fn(t)
      // DVV_WEB_SHOTS=1: a screenshot after every step too (to look at the page)
      if (process.env.DVV_WEB_SHOTS) await evidence(`ok ${name}`)
    } catch (err) {
      await evidence(name)
      throw err
    }
  })
}

const text = (sel) => page.$eval(sel, (e) => e.textContent.trim())
const visible = (sel) => page.$eval(sel, (e) => !e.closest('[hidden]') && e.getClientRects().length > 0).catch(() => false)
async function waitText (sel, re, what) {
  await page.waitForFunction((s, src, flags) => {
    const e = document.querySelector(s)
    return !!e && !e.closest('[hidden]') && new RegExp(src, flags).test(e.textContent)
  }, { timeout: 15000 }, sel, re.source, re.flags).catch(async (e) => {
    let now = '(absent)'
    try { now = await text(sel) } catch {}
    throw new Error(`${what || sel}: wanted ${re}, the page shows ${JSON.stringify(now)} (${e.message})`)
  })
}
async function fillAndClick (fields, button) {
  for (const [sel, value] of Object.entries(fields)) {
    await page.$eval(sel, (e) => { e.value = '' })
    await page.type(sel, value)
  }
  await page.click(button)
}
/** The dvv binary with the test's config home; resolves {code, stdout, stderr}. */
function dvv (args, { timeoutMs = 20000 } = {}) {
  return new Promise((resolve) => {
    execFile(bin('dvv'), args, {
      env: { ...process.env, XDG_CONFIG_HOME: env.xdg, DVV_API: '', DVV_TOKEN: '', DVV_RELAY: '', DVV_REGIONS: '' },
      timeout: timeoutMs
    }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr })
    })
  })
}

// Whether the relay on this branch writes dvv:user:{sub}:live (the usage work): the page's
// online/players for a real agent need it.
function relayWritesLive () {
  const dir = path.join(REPO_ROOT, 'userspace')
  return fs.readdirSync(dir).filter((f) => f.endsWith('.c'))
    .some((f) => /:live"/.test(fs.readFileSync(path.join(dir, f), 'utf8')))
}

const cardSel = (tid) => `#tunnel-list li[data-id="${tid}"]`
const tunnelIds = () => page.$$eval('#tunnel-list > li', (l) => l.map((e) => e.dataset.id))

// ------------------------------------------------------------------------------- set-up

before(withLogs('start PostgreSQL, Redis, the Stripe stand-in, dvv-api and chromium', async () => {
  for (const f of [bin('dvv-api'), CHROMIUM]) {
    if (!fs.existsSync(f)) throw new Error(`missing ${f}: build dvv-api (make SAN=1) and run scripts/setup.sh (chromium)`)
  }
  // The stand-in must know the API's webhook URL and the API the stand-in's: start the stand-in
  // first, point it at the API once the API's port is known.
  env.standin = await startStandin({ secretKey: STRIPE_KEY, webhookSecret: STRIPE_WHSEC, webhookUrl: 'http://127.0.0.1:9/' })
  // a real relay that trusts the very public key the API signs with (kid web1), and a real
  // Minecraft server for the command the page shows
  const keys = await apiKeys('web1')
  const redis = await startRedis()
  env.relay = await startRelay({ redisPort: redis.port, keys, extraArgs: ['--jwt-pubkey', keys.kidPub] })
  env.mc = await startMcServer({ motd: 'DVV dashboard e2e' })
  env.xdg = await makeTempDir('xdg')
  env.api = await startApi({
    pg: await startPg(),
    keys,
    redisPort: redis.port,
    // real argon2 cost is not what this test measures; a small login budget per account is,
    // so that the page's rate-limit message can be seen
    testArgs: ['--argon2-m-kib', '8192', '--argon2-t', '1', '--rate-ip-per-min', '0', '--rate-account-per-min', '3'],
    extraArgs: ['--stripe-api', env.standin.url, '--relays', `eu=127.0.0.1:${env.relay.agentPort}`],
    env: { DVV_API_STRIPE_SECRET_KEY: STRIPE_KEY, DVV_API_STRIPE_WEBHOOK_SECRET: STRIPE_WHSEC }
  })
  env.standin.setWebhookUrl(`${env.api.url}/v1/stripe/webhook`)
  env.redisPort = env.api.redisPort
  await launchBrowser()
}))

after(async () => {
  if (browser) { try { await browser.close() } catch {} }
  if (env.standin) await env.standin.close()
  await cleanupApi()
  if (shotDir && !env.keepShots) fs.rmSync(shotDir, { recursive: true, force: true })
})

// ------------------------------------------------------------------------------- the steps

const stamp = Date.now().toString(36)
// Hostile but valid for the API (which refuses < > " \ and spaces in an address): entities and
// script-looking text. Through innerHTML the page would show "<img ...>"; as text it shows this.
const EMAIL = `o'neil&lt;img/src=x/onerror=window.__pwned=1&gt;+${stamp}@example.com`
const PLAIN_EMAIL = `web-${stamp}@example.com`
const PASSWORD = 'correct horse battery staple'

step('the page loads with no external resource and offers log in / sign up', async () => {
  await page.goto(env.api.url + '/', { waitUntil: 'load' })
  await page.waitForSelector('#auth:not([hidden])')
  assert.equal(await visible('#dash'), false, 'the dashboard is hidden while signed out')
  // every label names a control
  const unlabeled = await page.$$eval('input, textarea', (l) => l.filter((e) => !e.labels || e.labels.length === 0).map((e) => e.id))
  assert.deepEqual(unlabeled, [], 'every input has a <label>')
})

step('sign up: a short password is refused in the page, a wrong login shows the API message', async () => {
  await fillAndClick({ '#auth-email': PLAIN_EMAIL, '#auth-password': 'short' }, '#signup-btn')
  await waitText('#auth-error', /at least 10 characters/, 'client-side password check')
  await fillAndClick({ '#auth-email': PLAIN_EMAIL, '#auth-password': PASSWORD }, '#login-btn')
  // unknown email: the API's 401 message (same for a wrong password), shown as given
  await waitText('#auth-error', /\S/, 'the login error')
  assert.equal(await visible('#dash'), false)
})

step('sign up with a hostile email: the plan and the first tunnel appear, the email is text', async () => {
  await fillAndClick({ '#auth-email': EMAIL, '#auth-password': PASSWORD }, '#signup-btn')
  // one predicate (a losing race would keep polling into later pages)
  const r = await (await page.waitForFunction(() => {
    const dash = document.querySelector('#dash')
    const err = document.querySelector('#auth-error')
    return (dash && !dash.hidden && 'dash') || (err && !err.hidden && 'error')
  })).jsonValue()
  if (r !== 'dash') throw new Error(`the API refused the address: ${await text('#auth-error')}`)
  env.email = EMAIL
  assert.equal(await text('#who-email'), env.email, 'the email is shown exactly, as text')
  assert.equal(await page.evaluate(() => window.__pwned), undefined, 'no markup from the API ran')
  assert.equal(await page.$$eval('img', (l) => l.length), 0, 'no element was made from API text')

  await waitText('#plan-name', /^Free$/, 'plan title')
  await waitText('#plan-limits', /^1 tunnel(?!s)/, 'tunnel limit')
  await waitText('#plan-limits', /20 players/, 'player limit')
  await waitText('#plan-limits', /30 min with no players/, 'idle timeout')
  await waitText('#usage-text', /^0 bytes of 10\.0 GiB used \(0%\)$/, 'usage')
  await page.waitForFunction(() => document.querySelectorAll('#tunnel-list > li').length === 1)
  const [tid] = await tunnelIds()
  assert.match(tid, /^t_[a-z0-9]{20}$/)
  env.tid1 = tid
  // free: the custom subdomain is disabled and the page says why
  assert.equal(await page.$eval(`${cardSel(tid)} input`, (e) => e.disabled), true)
  await waitText(`${cardSel(tid)} .subdomain p`, /not part of the Free plan.*upgrade to Paid/i, 'why the subdomain is disabled')
  // the session is the HttpOnly cookie: script cannot read it
  assert.equal(await page.evaluate(() => document.cookie.includes('dvv_session')), false)
})

step('live state: what a relay writes to Redis shows up within one refresh, in place', async () => {
  // Before any agent runs (no relay writes this tunnel's entry meanwhile). Written the way the
  // relay writes it (docs/redis.md); the real relay's entry is checked further down.
  env.sub = await page.evaluate(async () => (await (await fetch('/v1/me')).json()).user.id)
  assert.match(env.sub, /^u_[a-z0-9]{20}$/)
  // Mark the card node: a re-render that rebuilt it (flicker, lost input) would lose the mark.
  await page.$eval(cardSel(env.tid1), (e) => { e.__mark = 'same-node' })
  await page.$eval(`${cardSel(env.tid1)} input`, (e) => { e.__mark = 'same-input' })
  const now = Math.floor(Date.now() / 1000)
  const live = JSON.stringify({ hostname: `brave-ocelot.eu.dvv.test`, region: 'eu', instance: 'web-test', players: 3, since: now - 60, t: now })
  await redis(env.redisPort, 'HSET', `${PREFIX}user:{${env.sub}}:live`, env.tid1, live)
  await waitText(`${cardSel(env.tid1)} .pill`, /^online$/, 'online pill')
  await waitText(`${cardSel(env.tid1)} h3`, /^brave-ocelot\.eu\.dvv\.test$/, 'hostname')
  await waitText(`${cardSel(env.tid1)} dl`, /Players\s*3/, 'players')
  assert.equal(await page.$eval(cardSel(env.tid1), (e) => e.__mark), 'same-node', 'the card was updated in place')
  assert.equal(await page.$eval(`${cardSel(env.tid1)} input`, (e) => e.__mark), 'same-input')
  // gone from Redis: offline after the next refresh
  await redis(env.redisPort, 'HDEL', `${PREFIX}user:{${env.sub}}:live`, env.tid1)
  await waitText(`${cardSel(env.tid1)} .pill`, /^offline$/, 'offline pill')
})

step('create a token: the command is shown once and copied; the token is a JWT for this tunnel', async () => {
  const origin = env.api.url
  await browser.defaultBrowserContext().overridePermissions(origin, ['clipboard-read', 'clipboard-write', 'clipboard-sanitized-write'])
  await page.click(`${cardSel(env.tid1)} button.create-token`)
  await page.waitForSelector('#token-new:not([hidden])')
  const command = await page.$eval('#token-command', (e) => e.value)
  const token = await page.$eval('#token-value', (e) => e.value)
  assert.match(token, /^eyJ[\w-]+\.[\w-]+\.[\w-]+$/)
  assert.ok(command.includes(`--api ${origin}`), `the command names the API: ${command}`)
  assert.ok(command.includes(`--token ${token}`), 'the command carries the token shown')
  assert.match(command, /^dvv login .* && dvv --local /)
  const claims = jwtPayload(token)
  assert.equal(claims.tid, env.tid1)
  assert.equal(claims.sub, env.sub)
  assert.match(claims.jti, /^k_[a-z0-9]{20}$/)
  env.jti = claims.jti
  env.command = command

  await page.click('#copy-command')
  await waitText('#copy-status', /Command copied/, 'copy status')
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), command)

  // the list shows it as active
  await page.waitForSelector(`#token-list li[data-id="${env.jti}"]`)
  assert.match(await text(`#token-list li[data-id="${env.jti}"]`), /active/)

  // "Done" forgets it: the page keeps no copy of the token
  await page.click('#token-done')
  assert.equal(await visible('#token-new'), false)
  assert.equal(await page.$eval('#token-value', (e) => e.value), '')
  const html = await page.content()
  assert.equal(html.includes(token), false, 'the token is gone from the page')
})

step('the command shown, run for real: the agent logs in, opens the tunnel, a player joins', async () => {
  // "dvv login --api URL --token T && dvv --local 127.0.0.1:25565": both halves as written,
  // with our Minecraft server's port in place of 25565
  const [login, run] = env.command.split(' && ').map((part) => part.trim().split(/\s+/))
  assert.equal(login[0], 'dvv')
  assert.equal(run[0], 'dvv')
  const r = await dvv(login.slice(1))
  assert.equal(r.code, 0, `${login.slice(0, 3).join(' ')} … exited ${r.code}: ${r.stderr}`)
  const runArgs = run.slice(1).map((a) => (/^127\.0\.0\.1:\d+$/.test(a) ? `127.0.0.1:${env.mc.port}` : a))
  const proc = spawnProcess('agent', bin('dvv'), ['--json', ...runArgs],
    { env: { XDG_CONFIG_HOME: env.xdg, DVV_API: '', DVV_TOKEN: '', DVV_RELAY: '', DVV_REGIONS: '' } })
  const { ev } = await waitForLine(proc, (_l, e) => e && e.event === 'tunnel_up', { timeoutMs: 20000, what: 'a tunnel_up event' })
  env.agent = { proc, hostname: ev.hostname }
  const joined = await join({ relayPort: env.relay.playerPort, hostname: ev.hostname, username: 'webuser', chat: 'hello from the dashboard test', timeoutMs: 15000 })
  assert.equal(joined.ok, true, `the player reached play state: ${JSON.stringify(joined)}`)
  // the page learns the name the relay gave the tunnel (dvv:tunnel:{tid}) on its next refresh
  await waitText(`${cardSel(env.tid1)} h3`, new RegExp(`^${ev.hostname.replace(/\./g, '\\.')}$`), 'the hostname the relay gave')
})

step('a real relay reports the tunnel online with its player', async (t) => {
  if (!relayWritesLive()) { t.skip('the relay on this branch does not write the live hash yet (usage work)'); return }
  const p = await stayingPlayer({ relayPort: env.relay.playerPort, hostname: env.agent.hostname, username: 'stayer' })
  try {
    await waitText(`${cardSel(env.tid1)} .pill`, /^online$/, 'online pill')
    await page.waitForFunction((s) => /Players\s*1/.test(document.querySelector(`${s} dl`)?.textContent || ''), { timeout: 45000 }, cardSel(env.tid1))
  } finally {
    p.end()
  }
})

step('revoke the token: the list says revoked and Redis has the jti in the revoked set', async () => {
  await page.click(`#token-list li[data-id="${env.jti}"] button.danger`)
  await waitText(`#token-list li[data-id="${env.jti}"]`, /revoked/, 'token state')
  assert.equal(await page.$(`#token-list li[data-id="${env.jti}"] button`), null, 'no revoke button on a revoked token')
  const key = `${PREFIX}user:{${env.sub}}:revoked`
  await until5s(async () => (await redis(env.redisPort, 'ZSCORE', key, env.jti)) !== null, `${env.jti} in ${key}`)
  // the relay acts on the revoke event: the running agent stops with exit status 3
  const { code } = await Promise.race([env.agent.proc.exitPromise, sleep(10000).then(() => ({ code: 'still running after 10 s' }))])
  assert.equal(code, 3, 'the agent of a revoked token exits 3')
})

step('a second tunnel on the free plan: the page shows the plan-limit error', async () => {
  await page.click('#tunnel-create')
  await waitText('#tunnels-error', /allows 1 tunnel\. Upgrade to Paid for up to 5 tunnels\.$/, 'plan limit message')
  assert.equal((await tunnelIds()).length, 1)
})

step('upgrade through checkout on the Stripe stand-in: the paid plan appears', async () => {
  const btn = await page.waitForSelector('#upgrade button[data-tier="paid"]')
  assert.match(await btn.evaluate((e) => e.textContent), /Upgrade to Paid/)
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), btn.click()])
  assert.ok(page.url().startsWith(env.standin.url), `on the stand-in's checkout page: ${page.url()}`)
  // the stand-in's page: one button pays (it sends the signed webhook and redirects back)
  const pay = await page.waitForSelector('button, input[type=submit]')
  await Promise.all([page.waitForNavigation({ waitUntil: 'load', timeout: 30000 }), pay.click()])
  assert.ok(page.url().startsWith(env.api.url), `back on the dashboard: ${page.url()}`)
  await page.waitForSelector('#dash:not([hidden])')
  await waitText('#checkout-banner', /on the Paid plan now/, 'checkout return banner')
  await waitText('#plan-name', /^Paid$/, 'plan title')
  await waitText('#plan-limits', /5 tunnels/, 'paid tunnel limit')
  assert.equal(new URL(page.url()).search, '', 'the ?checkout parameter is dropped')
})

step('custom subdomain: rejected shapes stay local, a good one is reserved in Redis', async () => {
  const card = cardSel(env.tid1)
  await page.waitForFunction((s) => { const e = document.querySelector(`${s} input`); return !!e && !e.disabled }, {}, card)
  await fillAndClick({ [`${card} input`]: '<b>x</b>' }, `${card} .subdomain button[type=submit]`)
  await waitText(`${card} p.error`, /3 to 40 characters/, 'label shape error')
  // a reserved name: the API's 422 message, as text
  await fillAndClick({ [`${card} input`]: 'www' }, `${card} .subdomain button[type=submit]`)
  await waitText(`${card} p.error`, /'www' is reserved/, 'reserved name error')
  env.label = `sleepy-${stamp}`
  await fillAndClick({ [`${card} input`]: env.label }, `${card} .subdomain button[type=submit]`)
  await page.waitForFunction((s) => { const e = document.querySelector(`${s} p.error`); return !!e && e.hidden }, {}, card)
  // the agent still runs under its old name (it was revoked); the card says when the new applies
  await waitText(`${card} .pending-name`, new RegExp(`Custom name ${env.label} takes effect when the agent reconnects`), 'the reserved name')
  const names = `${PREFIX}user:{${env.sub}}:names`
  await until5s(async () => (await redis(env.redisPort, 'HGET', names, env.tid1)) === env.label, `${env.label} in ${names}`)
})

step('a second tunnel on the paid plan', async () => {
  await page.click('#tunnel-create')
  await page.waitForFunction(() => document.querySelectorAll('#tunnel-list > li').length === 2)
  assert.equal(await visible('#tunnels-error'), false)
})

step('delete a tunnel: an inline confirmation, then the card goes and Redis blocks the tid', async () => {
  const ids = await tunnelIds()
  const tid = ids.find((x) => x !== env.tid1)
  const card = cardSel(tid)
  await page.click(`${card} button.delete-tunnel`)
  await page.waitForSelector(`${card} .confirm:not([hidden])`)
  // "Keep it" keeps it
  await page.click(`${card} .confirm button.secondary`)
  assert.equal(await visible(`${card} .confirm`), false)
  assert.deepEqual(await tunnelIds(), ids)
  await page.click(`${card} button.delete-tunnel`)
  await page.click(`${card} .confirm button.danger`)
  await page.waitForFunction((s) => !document.querySelector(s), {}, card)
  const blocked = `${PREFIX}user:{${env.sub}}:blocked`
  await until5s(async () => (await redis(env.redisPort, 'SISMEMBER', blocked, tid)) === 1, `${tid} in ${blocked}`)
})

step('usage: the bar follows what the relays count, and the capped state says when it resets', async () => {
  const me = await page.evaluate(async () => (await (await fetch('/v1/me')).json()))
  const cap = me.plan.bandwidth_bytes
  const usage = `${PREFIX}user:{${env.sub}}:usage`
  // written the way the relays' usage script writes it (docs/redis.md)
  await redis(env.redisPort, 'HSET', usage, 'period', String(me.plan.period_start), 'bytes', String(Math.floor(cap / 4)))
  await waitText('#usage-text', /of 500\.0 GiB used \(25%\)$/, 'usage text')
  assert.equal(await page.$eval('#usage-bar', (e) => Math.round((e.value / e.max) * 100)), 25)
  assert.equal(await visible('#usage-capped'), false)
  await redis(env.redisPort, 'HSET', usage, 'bytes', String(cap))
  const day = new Date(me.plan.period_end * 1000).toISOString().slice(0, 10)
  await waitText('#usage-capped', new RegExp(`Bandwidth limit reached.*resets on ${day}`), 'capped notice')
  await redis(env.redisPort, 'DEL', usage)
  await page.waitForFunction(() => document.querySelector('#usage-capped').hidden, { timeout: 15000 })
})

step('a failed payment shows past due with what to do; paying again clears it', async () => {
  const [sub] = [...env.standin.state.subscriptions.values()]
  assert.ok(sub, 'the checkout made a subscription')
  const post = (what) => fetch(`${env.standin.url}/admin/subscriptions/${sub.id}/${what}`, { method: 'POST', body: '{}' })
  assert.equal((await post('past_due')).status, 200)
  await waitText('#plan-status', /^past due$/, 'status badge')
  await waitText('#plan-warning', /payment did not go through/, 'past-due warning')
  assert.equal((await post('renew')).status, 200)
  await waitText('#plan-status', /^active$/, 'status badge')
  await page.waitForFunction(() => document.querySelector('#plan-warning').hidden, { timeout: 15000 })
})

step('"Manage billing" opens the billing portal, whose link leads back', async () => {
  const btn = await page.waitForSelector('#billing-portal')
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), btn.click()])
  assert.ok(page.url().startsWith(`${env.standin.url}/portal/`), `on the stand-in's portal page: ${page.url()}`)
  const back = await page.waitForSelector('a')
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), back.click()])
  assert.ok(page.url().startsWith(env.api.url), `back on the dashboard: ${page.url()}`)
  await waitText('#plan-name', /^Paid$/, 'plan title')
})

step('a canceled checkout says nothing was charged', async () => {
  await page.goto(`${env.api.url}/?checkout=cancel`, { waitUntil: 'load' })
  await waitText('#checkout-banner', /Checkout canceled: nothing was charged/, 'cancel banner')
  assert.equal(new URL(page.url()).search, '')
  await waitText('#plan-name', /^Paid$/, 'plan title')
})

step('every write sent X-Requested-With and JSON; nothing left the two origins', async () => {
  const origins = new Set([new URL(env.api.url).origin])
  origins.add(new URL(env.standin.url).origin)
  const foreign = requests.filter((r) => !r.url.startsWith('data:') && !origins.has(new URL(r.url).origin))
  assert.deepEqual(foreign.map((r) => r.url), [], 'no external resource')
  const writes = requests.filter((r) => r.method !== 'GET' && r.url.startsWith(env.api.url + '/v1/'))
  assert.ok(writes.length >= 5, `writes seen: ${writes.length}`)
  for (const w of writes) {
    assert.equal(w.headers['x-requested-with'], 'dvv', `${w.method} ${w.url}`)
    assert.match(w.headers['content-type'] || '', /^application\/json/, `${w.method} ${w.url}`)
  }
  assert.deepEqual(env.pageErrors, [], 'no script error on the page')
  assert.deepEqual(env.dialogs, [], 'no alert() was opened')
})

step('readable on a phone: no horizontal scrolling at 360 px', async () => {
  await page.setViewport({ width: 360, height: 740, isMobile: true, hasTouch: true })
  await sleep(200)
  const w = await page.evaluate(() => document.documentElement.scrollWidth)
  assert.ok(w <= 360, `page is ${w} px wide at a 360 px viewport`)
  await page.setViewport({ width: 1100, height: 900 })
})

step('log out: back to the form, and the old session no longer works after a reload', async () => {
  await page.click('#logout')
  await page.waitForSelector('#auth:not([hidden])')
  assert.equal(await visible('#dash'), false)
  assert.equal(await page.$$eval('#tunnel-list > li', (l) => l.length), 0, 'signed-out page keeps no account data')
  await page.reload({ waitUntil: 'load' })
  await page.waitForSelector('#auth:not([hidden])')
})

step('too many logins: the rate-limit message with its wait', async () => {
  let seen = ''
  for (let i = 0; i < 8 && !/Too many attempts/.test(seen); i++) {
    await fillAndClick({ '#auth-email': env.email, '#auth-password': 'wrong password 123' }, '#login-btn')
    await page.waitForFunction(() => { const e = document.querySelector('#auth-error'); const b = document.querySelector('#login-btn'); return !!e && !e.hidden && !!b && !b.disabled })
    seen = await text('#auth-error')
  }
  assert.match(seen, /Too many attempts\. Wait (\d+ seconds?|a moment) and try again\./)
})

