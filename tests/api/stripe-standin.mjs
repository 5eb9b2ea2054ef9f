// A local stand-in for the parts of Stripe that dvv-api talks to, for tests and local runs
// (scripts/dvv-local.sh): Stripe itself cannot be reached from here.
//
// Outbound API (what dvv-api calls), checked like Stripe checks it: `Authorization: Bearer
// <secret key>` (401 otherwise), form-encoded bodies, Idempotency-Key (same key + same body =
// same answer; same key + other body = 400 idempotency_error), known prices and customers:
//   POST /v1/customers                 -> customer object
//   POST /v1/checkout/sessions         -> checkout.session with `url` = <base>/checkout/<id>
//   POST /v1/billing_portal/sessions   -> billing_portal.session with `url` = <base>/portal/<id>
// The pages a user sees:
//   GET  /checkout/<id>                -> a tiny HTML page with a "Pay" button
//   POST /checkout/<id>/pay            -> creates the subscription, sends the signed webhooks
//        checkout.session.completed then customer.subscription.created (and invoice.paid),
//        answers 303 to the session's success_url (or JSON with `Accept: application/json`)
// Test controls (no key needed; bind to 127.0.0.1 only):
//   POST /admin/events                 -> send one event: {"type", "object", "created"?, "id"?}
//   POST /admin/subscriptions/<id>/cancel | /past_due | /renew -> the events Stripe would send
//   GET  /admin/state                  -> customers, sessions, subscriptions, deliveries
// Webhooks are signed as Stripe documents it: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256
// of "<t>.<payload>" with the endpoint secret>`; a delivery that gets no 2xx is retried (a few
// times, quickly: Stripe retries for 3 days).
//
// CLI:
//   node tests/api/stripe-standin.mjs serve --port 12111 --secret-key sk_test_x \
//        --webhook-url http://127.0.0.1:8080/v1/stripe/webhook --webhook-secret whsec_x \
//        [--prices price_dvv_paid_monthly,...]
//   node tests/api/stripe-standin.mjs sign --secret whsec_x --file event.json [--t UNIX]
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { fileURLToPath } from 'node:url';

export const API_VERSION = '2024-06-20';

export function signHeader(secret, payload, t = Math.floor(Date.now() / 1000)) {
  const v1 = crypto.createHmac('sha256', secret).update(`${t}.${payload}`).digest('hex');
  return `t=${t},v1=${v1}`;
}

const rid = (prefix) => `${prefix}_test_${crypto.randomBytes(12).toString('hex')}`;
const now = () => Math.floor(Date.now() / 1000);

// Stripe's form encoding: a[b][c]=v -> {a:{b:{c:v}}}; a[0][x]=v -> {a:[{x:v}]}
export function parseForm(text) {
  const out = {};
  for (const [k, v] of new URLSearchParams(text)) {
    const parts = k.replace(/\]/g, '').split('[');
    let o = out;
    for (let i = 0; i < parts.length - 1; i++) {
      const next = /^\d+$/.test(parts[i + 1]) ? [] : {};
      o[parts[i]] ??= next;
      o = o[parts[i]];
    }
    o[parts[parts.length - 1]] = v;
  }
  return out;
}

function stripeError(res, status, type, message, extra = {}) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ error: { type, message, ...extra } }));
}

function readBody(req, limit = 1 << 20) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let n = 0;
    req.on('data', (c) => {
      n += c.length;
      if (n > limit) {
        reject(new Error('body too large'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const isUrl = (s) => {
  try {
    const u = new URL(s.replace('{CHECKOUT_SESSION_ID}', 'x'));
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
};

export async function startStandin({
  port = 0,
  secretKey,
  webhookUrl,
  webhookSecret,
  prices = ['price_dvv_paid_monthly'],
  retries = 4,
  retryDelayMs = 300,
  log = () => {},
} = {}) {
  if (!secretKey || !webhookSecret) throw new Error('stand-in: secretKey and webhookSecret needed');
  const st = {
    customers: new Map(),
    sessions: new Map(),
    subscriptions: new Map(),
    portals: new Map(),
    idem: new Map(), // key -> {body, status, answer}
    deliveries: [], // {id, type, status, attempts}
    webhookUrl,
  };
  let base = '';

  async function deliver(event, { attempts = retries } = {}) {
    const payload = JSON.stringify(event);
    const rec = { id: event.id, type: event.type, created: event.created, status: 0, attempts: 0 };
    st.deliveries.push(rec);
    for (let i = 0; i < attempts; i++) {
      rec.attempts++;
      try {
        const r = await fetch(st.webhookUrl, {
          method: 'POST',
          headers: {
            'content-type': 'application/json; charset=utf-8',
            'stripe-signature': signHeader(webhookSecret, payload),
            'user-agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)',
          },
          body: payload,
          signal: AbortSignal.timeout(10000),
        });
        rec.status = r.status;
        rec.answer = await r.text();
        if (r.ok) break;
      } catch (e) {
        rec.status = 0;
        rec.answer = String(e.message ?? e);
      }
      log(`webhook ${event.type} ${event.id}: ${rec.status}, retrying`);
      await new Promise((res) => setTimeout(res, retryDelayMs * (i + 1)));
    }
    return rec;
  }

  function makeEvent(type, object, { created = now(), id = rid('evt'), previous } = {}) {
    const data = { object };
    if (previous) data.previous_attributes = previous;
    return {
      id,
      object: 'event',
      api_version: API_VERSION,
      created,
      data,
      livemode: false,
      pending_webhooks: 1,
      request: { id: null, idempotency_key: null },
      type,
    };
  }

  function subscriptionObject(sub) {
    return JSON.parse(JSON.stringify(sub));
  }

  function createSubscription(session) {
    const t = now();
    const sub = {
      id: rid('sub'),
      object: 'subscription',
      customer: session.customer,
      status: 'active',
      cancel_at_period_end: false,
      created: t,
      current_period_start: t,
      current_period_end: t + 30 * 86400,
      items: {
        object: 'list',
        data: [
          {
            id: rid('si'),
            object: 'subscription_item',
            price: { id: session._price, object: 'price', recurring: { interval: 'month' } },
            quantity: 1,
          },
        ],
      },
      metadata: { ...(session._subscription_metadata ?? {}) },
      latest_invoice: rid('in'),
      livemode: false,
    };
    st.subscriptions.set(sub.id, sub);
    return sub;
  }

  function invoiceFor(sub, { paid, attempt = 1 } = {}) {
    return {
      id: rid('in'),
      object: 'invoice',
      customer: sub.customer,
      subscription: sub.id,
      status: paid ? 'paid' : 'open',
      paid: !!paid,
      attempt_count: attempt,
      amount_due: 500,
      currency: 'eur',
      billing_reason: 'subscription_cycle',
      subscription_details: { metadata: { ...sub.metadata } },
    };
  }

  async function pay(session) {
    if (session.status !== 'open') return { error: 'session is not open' };
    const sub = createSubscription(session);
    session.status = 'complete';
    session.payment_status = 'paid';
    session.subscription = sub.id;
    const t = now();
    // Stripe's order of creation; its delivery order is not guaranteed (the API copes)
    const out = [];
    out.push(await deliver(makeEvent('checkout.session.completed', publicSession(session), { created: t })));
    out.push(await deliver(makeEvent('customer.subscription.created', subscriptionObject(sub), { created: t })));
    out.push(await deliver(makeEvent('invoice.paid', invoiceFor(sub, { paid: true }), { created: t })));
    return { subscription: sub.id, deliveries: out };
  }

  function publicSession(s) {
    const o = {};
    for (const [k, v] of Object.entries(s)) if (!k.startsWith('_')) o[k] = v;
    return JSON.parse(JSON.stringify(o));
  }

  async function apiRoute(req, res, path) {
    const auth = req.headers.authorization ?? '';
    if (auth !== `Bearer ${secretKey}`) {
      const given = auth.replace(/^Bearer /, '');
      const masked = given ? `${given.slice(0, 8)}${'*'.repeat(8)}${given.slice(-4)}` : '';
      return stripeError(
        res,
        401,
        'invalid_request_error',
        given ? `Invalid API Key provided: ${masked}` : 'You did not provide an API key.',
      );
    }
    if ((req.headers['content-type'] ?? '').split(';')[0] !== 'application/x-www-form-urlencoded')
      return stripeError(res, 400, 'invalid_request_error', 'Invalid request: form-encoded body expected');
    const text = await readBody(req);
    const f = parseForm(text);
    const key = req.headers['idempotency-key'];
    if (key) {
      const prev = st.idem.get(key);
      if (prev) {
        if (prev.body !== `${path}\n${text}`)
          return stripeError(
            res,
            400,
            'idempotency_error',
            'Keys for idempotent requests can only be used with the same parameters they were first used with.',
          );
        res.writeHead(prev.status, { 'content-type': 'application/json', 'idempotent-replayed': 'true' });
        return res.end(prev.answer);
      }
    }
    let status = 200;
    let obj;
    const fail = (code, type, message, param) => {
      status = code;
      obj = { error: { type, message, ...(param ? { param } : {}) } };
    };
    if (path === '/v1/customers') {
      obj = {
        id: rid('cus'),
        object: 'customer',
        created: now(),
        email: f.email ?? null,
        metadata: f.metadata ?? {},
        livemode: false,
      };
      st.customers.set(obj.id, obj);
    } else if (path === '/v1/checkout/sessions') {
      const price = f.line_items?.[0]?.price;
      if (!['payment', 'setup', 'subscription'].includes(f.mode))
        fail(400, 'invalid_request_error', 'Missing required param: mode.', 'mode');
      else if (!f.success_url || !isUrl(f.success_url))
        fail(400, 'invalid_request_error', 'Not a valid URL', 'success_url');
      else if (f.cancel_url && !isUrl(f.cancel_url))
        fail(400, 'invalid_request_error', 'Not a valid URL', 'cancel_url');
      else if (!price)
        fail(400, 'invalid_request_error', 'Missing required param: line_items[0][price].', 'line_items');
      else if (!prices.includes(price))
        fail(400, 'invalid_request_error', `No such price: '${price}'`, 'line_items[0][price]');
      else if (f.line_items[0].quantity !== undefined && !/^[1-9]\d*$/.test(f.line_items[0].quantity))
        fail(400, 'invalid_request_error', 'Invalid integer', 'line_items[0][quantity]');
      else if (f.customer && !st.customers.has(f.customer))
        fail(400, 'invalid_request_error', `No such customer: '${f.customer}'`, 'customer');
      else if (f.client_reference_id && f.client_reference_id.length > 200)
        fail(400, 'invalid_request_error', 'client_reference_id too long', 'client_reference_id');
      else {
        const id = rid('cs');
        const s = {
          id,
          object: 'checkout.session',
          mode: f.mode,
          status: 'open',
          payment_status: 'unpaid',
          customer: f.customer ?? null,
          client_reference_id: f.client_reference_id ?? null,
          metadata: f.metadata ?? {},
          subscription: null,
          success_url: f.success_url,
          cancel_url: f.cancel_url ?? null,
          url: `${base}/checkout/${id}`,
          amount_total: 500,
          currency: 'eur',
          created: now(),
          expires_at: now() + 86400,
          livemode: false,
          _price: price,
          _subscription_metadata: f.subscription_data?.metadata ?? {},
        };
        st.sessions.set(id, s);
        obj = publicSession(s);
      }
    } else if (path === '/v1/billing_portal/sessions') {
      if (!f.customer || !st.customers.has(f.customer))
        fail(400, 'invalid_request_error', `No such customer: '${f.customer ?? ''}'`, 'customer');
      else {
        obj = {
          id: rid('bps'),
          object: 'billing_portal.session',
          customer: f.customer,
          return_url: f.return_url ?? null,
          created: now(),
          livemode: false,
        };
        obj.url = `${base}/portal/${obj.id}`;
        st.portals.set(obj.id, obj);
      }
    } else {
      fail(404, 'invalid_request_error', `Unrecognized request URL (POST: ${path}).`);
    }
    const answer = JSON.stringify(obj);
    if (key) st.idem.set(key, { body: `${path}\n${text}`, status, answer });
    res.writeHead(status, { 'content-type': 'application/json', 'request-id': rid('req') });
    res.end(answer);
  }

  const html = (s) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

  async function route(req, res) {
    const url = new URL(req.url, 'http://x');
    const path = url.pathname;
    let m;
    if (req.method === 'POST' && path.startsWith('/v1/')) return apiRoute(req, res, path);
    if (req.method === 'GET' && (m = path.match(/^\/checkout\/([\w]+)$/))) {
      const s = st.sessions.get(m[1]);
      if (!s) return stripeError(res, 404, 'invalid_request_error', 'No such checkout session');
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      return res.end(`<!doctype html><html><head><meta charset="utf-8"><title>Checkout (Stripe stand-in)</title></head>
<body><h1>DVV ${html(s.metadata.plan ?? 'plan')}</h1><p>5.00 EUR / month (test: nothing is charged)</p>
<form method="post" action="/checkout/${html(s.id)}/pay"><button id="pay" type="submit">Pay</button></form>
${s.cancel_url ? `<p><a id="cancel" href="${html(s.cancel_url)}">Cancel</a></p>` : ''}</body></html>`);
    }
    if (req.method === 'POST' && (m = path.match(/^\/checkout\/([\w]+)\/pay$/))) {
      await readBody(req);
      const s = st.sessions.get(m[1]);
      if (!s) return stripeError(res, 404, 'invalid_request_error', 'No such checkout session');
      const r = await pay(s);
      if (r.error) return stripeError(res, 409, 'invalid_request_error', r.error);
      if ((req.headers.accept ?? '').includes('application/json')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end(JSON.stringify(r));
      }
      res.writeHead(303, { location: s.success_url.replace('{CHECKOUT_SESSION_ID}', s.id) });
      return res.end();
    }
    if (req.method === 'GET' && (m = path.match(/^\/portal\/([\w]+)$/))) {
      const p = st.portals.get(m[1]);
      if (!p) return stripeError(res, 404, 'invalid_request_error', 'No such portal session');
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      return res.end(`<!doctype html><title>Billing portal (Stripe stand-in)</title><p>Customer ${html(p.customer)}</p>
<p><a href="${html(p.return_url ?? '/')}">Return</a></p>`);
    }
    if (req.method === 'POST' && path === '/admin/events') {
      const b = JSON.parse((await readBody(req)) || '{}');
      if (!b.type || typeof b.object !== 'object')
        return stripeError(res, 400, 'invalid_request_error', 'need {"type","object"}');
      const ev = makeEvent(b.type, b.object, { created: b.created, id: b.id, previous: b.previous_attributes });
      const r = await deliver(ev, { attempts: b.attempts ?? retries });
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ event: ev, delivery: r }));
    }
    if (req.method === 'POST' && (m = path.match(/^\/admin\/subscriptions\/([\w]+)\/(cancel|past_due|renew)$/))) {
      const b = JSON.parse((await readBody(req)) || '{}');
      const sub = st.subscriptions.get(m[1]);
      if (!sub) return stripeError(res, 404, 'invalid_request_error', 'No such subscription');
      const t = b.created ?? now();
      const out = [];
      if (m[2] === 'cancel') {
        sub.status = 'canceled';
        sub.canceled_at = t;
        sub.ended_at = t;
        out.push(await deliver(makeEvent('customer.subscription.deleted', subscriptionObject(sub), { created: t })));
      } else if (m[2] === 'past_due') {
        sub.status = 'past_due';
        out.push(await deliver(makeEvent('invoice.payment_failed', invoiceFor(sub, { paid: false, attempt: 1 }), { created: t })));
        out.push(
          await deliver(makeEvent('customer.subscription.updated', subscriptionObject(sub), { created: t, previous: { status: 'active' } })),
        );
      } else {
        const prev = sub.status;
        sub.status = 'active';
        sub.current_period_start = sub.current_period_end;
        sub.current_period_end += 30 * 86400;
        out.push(await deliver(makeEvent('invoice.paid', invoiceFor(sub, { paid: true }), { created: t })));
        out.push(await deliver(makeEvent('customer.subscription.updated', subscriptionObject(sub), { created: t, previous: { status: prev } })));
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ subscription: subscriptionObject(sub), deliveries: out }));
    }
    if (req.method === 'GET' && path === '/admin/state') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(
        JSON.stringify({
          customers: [...st.customers.values()],
          sessions: [...st.sessions.values()].map(publicSession),
          subscriptions: [...st.subscriptions.values()],
          deliveries: st.deliveries,
        }),
      );
    }
    stripeError(res, 404, 'invalid_request_error', `Unrecognized request URL (${req.method}: ${path}).`);
  }

  const server = http.createServer((req, res) => {
    route(req, res).catch((e) => {
      if (!res.headersSent) stripeError(res, 500, 'api_error', String(e.message ?? e));
      else res.destroy();
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  base = `http://127.0.0.1:${server.address().port}`;
  return {
    url: base,
    port: server.address().port,
    state: st,
    makeEvent,
    deliver,
    setWebhookUrl: (u) => {
      st.webhookUrl = u;
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

function args(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith('--')) o[argv[i].slice(2)] = argv[i + 1]?.startsWith('--') ? true : argv[++i];
  }
  return o;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === fs.realpathSync(process.argv[1])) {
  const [cmd, ...rest] = process.argv.slice(2);
  const o = args(rest);
  if (cmd === 'sign') {
    if (!o.secret || !o.file) {
      console.error('usage: stripe-standin.mjs sign --secret WHSEC --file EVENT.json [--t UNIX]');
      process.exit(2);
    }
    const payload = fs.readFileSync(o.file, 'utf8');
    console.log(signHeader(o.secret, payload, o.t ? Number(o.t) : undefined));
  } else if (cmd === 'serve') {
    const s = await startStandin({
      port: Number(o.port ?? 12111),
      secretKey: o['secret-key'] ?? process.env.DVV_STRIPE_SECRET_KEY,
      webhookUrl: o['webhook-url'],
      webhookSecret: o['webhook-secret'] ?? process.env.DVV_STRIPE_WEBHOOK_SECRET,
      prices: (o.prices ?? 'price_dvv_paid_monthly').split(','),
      log: (l) => console.error(`stripe-standin: ${l}`),
    });
    console.log(`stripe-standin: listening on ${s.url}, webhooks to ${o['webhook-url']}`);
    for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => s.close().then(() => process.exit(0)));
  } else {
    console.error('usage: stripe-standin.mjs serve [...] | sign --secret S --file F');
    process.exit(2);
  }
}
