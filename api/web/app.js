// The DVV dashboard's one job: drive the dvv-api JSON API (/v1) from the browser — sign up,
// log in, show the plan, usage, tunnels and tokens, change them, and start a Stripe checkout.
//
// Rules this file keeps, and why:
// - API data (emails, labels, hostnames, error messages) only ever reaches the page through
//   textContent / Text nodes, never innerHTML: any of it may be hostile.
// - The session lives in the HttpOnly cookie the API sets; this script never sees or stores it.
//   Every non-GET request carries X-Requested-With: dvv (the API's CSRF rule) and a JSON body.
// - The 5 s refresh updates existing nodes in place (keyed by id) so nothing flickers and a
//   half-typed subdomain is not wiped.
'use strict';

(() => {
  const REFRESH_MS = 5000;
  const CHECKOUT_POLL_MS = 1000;
  const CHECKOUT_POLL_MAX = 90; // polls: the webhook usually lands in a few seconds
  const REQUEST_TIMEOUT_MS = 15000;

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- DOM helpers (text only)

  // el('li', {class: 'x', 'aria-label': 'y'}, 'text', child): strings become Text nodes.
  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = String(v);
      else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids) if (kid !== null && kid !== undefined && kid !== false) e.append(kid);
    return e;
  }

  // Sets text only when it changed: no needless DOM writes on each refresh.
  function setText(node, text) {
    const s = text === null || text === undefined ? '' : String(text);
    if (node.textContent !== s) node.textContent = s;
  }

  function show(node, on) {
    if (node.hidden === !on) return;
    node.hidden = !on;
  }

  function showMsg(node, msg) {
    setText(node, msg || '');
    show(node, !!msg);
  }

  // ---------------------------------------------------------------- formatting

  function fmtBytes(n) {
    const v = Number(n) || 0;
    const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    let x = v;
    while (x >= 1024 && i < units.length - 1) { x /= 1024; i++; }
    return i === 0 ? `${x} bytes` : `${x.toFixed(1)} ${units[i]}`;
  }

  // API times may be unix seconds or ISO 8601 text; both print as UTC.
  function toDate(v) {
    if (v === null || v === undefined || v === '') return null;
    if (typeof v === 'number') return new Date(v > 1e12 ? v : v * 1000);
    if (/^\d+$/.test(String(v))) return new Date(Number(v) * 1000);
    const d = new Date(String(v));
    return Number.isNaN(d.getTime()) ? null : d;
  }
  function fmtDay(v) {
    const d = toDate(v);
    return d ? d.toISOString().slice(0, 10) : '—';
  }
  function fmtTime(v) {
    const d = toDate(v);
    return d ? `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC` : '—';
  }
  function fmtPrice(cents, currency) {
    const amount = (Number(cents) || 0) / 100;
    try {
      return new Intl.NumberFormat(undefined, { style: 'currency', currency: String(currency || 'eur').toUpperCase() }).format(amount);
    } catch {
      return `${amount.toFixed(2)} ${String(currency || '').toUpperCase()}`;
    }
  }
  function plural(n, one, many) { return `${n} ${n === 1 ? one : many}`; }
  function fmtDuration(s) {
    if (s % 3600 === 0) return plural(s / 3600, 'hour', 'hours');
    if (s % 60 === 0) return `${s / 60} min`;
    return `${s} s`;
  }

  // ---------------------------------------------------------------- API client

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  const FALLBACK = {
    400: 'The request was not accepted. Check the fields and try again.',
    401: 'Wrong email or password, or your session has ended.',
    403: 'That is not allowed on your account.',
    404: 'Not found: it may have been deleted already.',
    409: 'That is already taken.',
    413: 'That is too large.',
    422: 'That value is not valid.',
    500: 'The DVV service failed. Try again in a moment.',
    503: 'The DVV service is unavailable right now. Try again in a moment.',
  };

  // API messages are terse ("the Free plan allows 1 tunnel"): shown as a sentence, so that a
  // hint appended after them reads right.
  function sentence(msg) {
    const m = msg.charAt(0).toUpperCase() + msg.slice(1);
    return /[.!?]$/.test(m) ? m : `${m}.`;
  }

  function errorText(status, body, retryAfter) {
    const err = body && typeof body.error === 'object' && body.error ? body.error : {};
    if (status === 429) {
      const secs = parseInt(retryAfter || '', 10);
      return secs > 0
        ? `Too many attempts. Wait ${plural(secs, 'second', 'seconds')} and try again.`
        : 'Too many attempts. Wait a moment and try again.';
    }
    if (typeof err.message === 'string' && err.message.trim()) return sentence(err.message.trim().slice(0, 500));
    return FALLBACK[status] || `The DVV service answered ${status}.`;
  }

  async function api(method, path, body) {
    const opt = { method, credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } };
    if (method !== 'GET') {
      opt.headers['Content-Type'] = 'application/json';
      opt.headers['X-Requested-With'] = 'dvv';
      opt.body = JSON.stringify(body || {});
    }
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
    opt.signal = ctl.signal;
    let res;
    let data = null;
    try {
      res = await fetch(path, opt);
      if (res.status !== 204) {
        const text = await res.text();
        if (text) { try { data = JSON.parse(text); } catch { data = null; } }
      }
    } catch {
      throw new ApiError(0, 'network', 'Cannot reach the DVV service. Check your connection and try again.');
    } finally {
      clearTimeout(timer);
    }
    if (!res.ok) {
      const code = data && data.error && typeof data.error.code === 'string' ? data.error.code : `http_${res.status}`;
      throw new ApiError(res.status, code, errorText(res.status, data, res.headers.get('Retry-After')));
    }
    if (res.status !== 204 && (data === null || typeof data !== 'object'))
      throw new ApiError(res.status, 'bad_response', 'The DVV service sent an answer this page cannot read.');
    return data;
  }

  // ---------------------------------------------------------------- state

  const state = {
    me: null,          // GET /v1/me
    plans: [],         // GET /v1/plans
    tunnels: [],       // GET /v1/tunnels
    tokens: [],        // GET /v1/tokens
    cards: new Map(),  // tunnel id -> { li, refs }
    refreshTimer: 0,
    signedIn: false,
    shown: {},         // what was last rendered where a rebuild is skipped when unchanged
  };

  function plan() { return (state.me && state.me.plan) || {}; }
  function planInfo(tier) { return state.plans.find((p) => p.tier === tier) || null; }

  // ---------------------------------------------------------------- views

  function showAuth(message) {
    state.signedIn = false;
    stopRefresh();
    state.me = null;
    state.tunnels = [];
    state.tokens = [];
    state.cards.clear();
    $('tunnel-list').replaceChildren();
    $('token-list').replaceChildren();
    $('upgrade').replaceChildren();
    $('plan-limits').replaceChildren();
    state.shown = {};
    hideNewToken();
    show($('loading'), false);
    show($('dash'), false);
    show($('who'), false);
    show($('auth'), true);
    showMsg($('auth-error'), message || '');
    showMsg($('global-error'), '');
  }

  async function showDash() {
    state.signedIn = true;
    show($('loading'), false);
    show($('auth'), false);
    show($('dash'), true);
    show($('who'), true);
    setText($('who-email'), state.me && state.me.user ? state.me.user.email : '');
    await Promise.all([loadPlans(), loadTunnels(), loadTokens()]);
    render();
    scheduleRefresh();
  }

  function onApiFailure(e, where) {
    if (e.status === 401 && state.signedIn) {
      showAuth('Your session has ended. Log in again.');
      return;
    }
    showMsg(where, e.message);
  }

  // ---------------------------------------------------------------- loading

  async function loadMe() { state.me = await api('GET', '/v1/me'); }
  async function loadPlans() {
    try {
      const r = await api('GET', '/v1/plans');
      state.plans = Array.isArray(r.plans) ? r.plans : [];
    } catch (e) { onApiFailure(e, $('plan-error')); }
  }
  async function loadTunnels() {
    try {
      const r = await api('GET', '/v1/tunnels');
      state.tunnels = Array.isArray(r.tunnels) ? r.tunnels : [];
      showMsg($('tunnels-error'), '');
    } catch (e) { onApiFailure(e, $('tunnels-error')); }
  }
  async function loadTokens() {
    try {
      const r = await api('GET', '/v1/tokens');
      state.tokens = Array.isArray(r.tokens) ? r.tokens : [];
      showMsg($('tokens-error'), '');
    } catch (e) { onApiFailure(e, $('tokens-error')); }
  }

  function stopRefresh() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = 0;
  }

  // A timeout chain, not setInterval: a slow answer never stacks requests.
  function scheduleRefresh() {
    stopRefresh();
    state.refreshTimer = setTimeout(refresh, REFRESH_MS);
  }

  async function refresh() {
    if (!state.signedIn) return;
    if (!document.hidden) {
      try {
        await loadMe();
        const r = await api('GET', '/v1/tunnels');
        state.tunnels = Array.isArray(r.tunnels) ? r.tunnels : [];
        showMsg($('global-error'), '');
        render();
      } catch (e) {
        if (e.status === 401) { showAuth('Your session has ended. Log in again.'); return; }
        showMsg($('global-error'), `${e.message} Retrying…`);
      }
    }
    if (state.signedIn) scheduleRefresh();
  }

  // ---------------------------------------------------------------- rendering: plan

  function render() {
    renderPlan();
    renderTunnels();
    renderTokens();
  }

  function renderPlan() {
    const p = plan();
    const usage = (state.me && state.me.usage) || {};
    setText($('plan-name'), p.title || p.tier || '—');
    const status = p.status || 'active';
    setText($('plan-status'), status.replace('_', ' '));
    $('plan-status').className = `badge ${status === 'active' ? 'ok' : 'bad'}`;

    let warn = '';
    if (status === 'past_due')
      warn = `Your last payment did not go through. Update your payment details to keep the ${p.title || p.tier} plan.`;
    else if (status === 'canceled')
      warn = 'Your subscription is canceled.';
    showMsg($('plan-warning'), warn);

    const facts = [];
    const mt = Number(p.max_tunnels) || 0;
    facts.push(mt > 0 ? plural(mt, 'tunnel', 'tunnels') : 'Unlimited tunnels');
    const mp = Number(p.max_players) || 0;
    facts.push(mp > 0 ? `${plural(mp, 'player', 'players')} at once per tunnel` : 'No player limit');
    const idle = Number(p.idle_timeout_s) || 0;
    facts.push(idle > 0 ? `Tunnels close after ${fmtDuration(idle)} with no players` : 'No idle timeout');
    facts.push(p.custom_names ? 'Custom subdomains' : 'Random names (no custom subdomains)');
    const bw = Number(p.bandwidth_bytes) || 0;
    facts.push(bw > 0 ? `${fmtBytes(bw)} of bandwidth per period` : 'Unlimited bandwidth');
    if (Number(p.priority) > 0) facts.push('Priority when relays are busy');
    if (p.period_end) facts.push(`Period ${fmtDay(p.period_start)} to ${fmtDay(p.period_end)} (UTC)`);
    const ul = $('plan-limits');
    const want = facts.join('\n');
    if (state.shown.facts !== want) {
      state.shown.facts = want;
      ul.replaceChildren(...facts.map((f) => el('li', { text: f })));
    }

    const used = Number(usage.bytes) || 0;
    const cap = Number(usage.bandwidth_bytes) || bw;
    const bar = $('usage-bar');
    if (cap > 0) {
      show(bar, true);
      bar.max = cap;
      bar.value = Math.min(used, cap);
      const pct = Math.min(100, Math.floor((used * 100) / cap));
      bar.setAttribute('aria-valuetext', `${pct}% used`);
      setText($('usage-text'), `${fmtBytes(used)} of ${fmtBytes(cap)} used (${pct}%)`);
    } else {
      show(bar, false);
      setText($('usage-text'), `${fmtBytes(used)} used (no cap)`);
    }
    const resets = p.period_end ? ` It resets on ${fmtDay(p.period_end)}.` : '';
    showMsg($('usage-capped'), usage.capped
      ? `Bandwidth limit reached: players cannot join your servers until the period ends.${resets}`
      : '');

    renderUpgrade(p);
  }

  function renderUpgrade(p) {
    const cur = planInfo(p.tier);
    const curPrice = cur ? Number(cur.price_cents) || 0 : 0;
    const offers = state.plans.filter((x) => x.tier !== p.tier && (Number(x.price_cents) || 0) > curPrice);
    const key = offers.map((x) => `${x.tier}:${x.title}:${x.price_cents}:${x.currency}`).join('|') + `/${curPrice > 0}`;
    const box = $('upgrade');
    if (state.shown.upgrade === key) return;
    state.shown.upgrade = key;
    const kids = offers.map((x) => el('button', {
      type: 'button',
      class: 'upgrade-btn',
      'data-tier': x.tier,
      onclick: () => checkout(x.tier),
    }, `Upgrade to ${x.title || x.tier} (${fmtPrice(x.price_cents, x.currency)} / month)`));
    if (curPrice > 0)
      kids.push(el('button', { type: 'button', class: 'secondary', id: 'billing-portal', onclick: portal }, 'Manage billing'));
    box.replaceChildren(...kids);
  }

  // The cheapest plan that allows more tunnels than the current one, for the "why" hints.
  function betterPlan(pred) {
    const p = plan();
    return state.plans
      .filter((x) => x.tier !== p.tier && pred(x))
      .sort((a, b) => (Number(a.price_cents) || 0) - (Number(b.price_cents) || 0))[0] || null;
  }

  // ---------------------------------------------------------------- rendering: tunnels

  function tunnelName(t) {
    return t.hostname || t.label || t.id;
  }

  function makeCard(t) {
    const id = t.id;
    const refs = {};
    refs.title = el('h3', { class: 'tunnel-host' });
    refs.pill = el('span', { class: 'pill' });
    refs.idText = el('code', { class: 'muted small', text: id });
    refs.pending = el('p', { class: 'muted small pending-name', hidden: true });
    refs.players = el('dd');
    refs.region = el('dd');
    refs.bytes = el('dd');
    refs.created = el('dd');
    refs.note = el('p', { class: 'warning', role: 'status', hidden: true });
    refs.error = el('p', { class: 'error', role: 'alert', hidden: true });

    const inputId = `sub-${id}`;
    refs.input = el('input', {
      id: inputId, type: 'text', inputmode: 'url', autocomplete: 'off', spellcheck: 'false',
      maxlength: 40, pattern: '[a-z0-9-]{3,40}', placeholder: 'sleepy-creeper',
      'aria-describedby': `${inputId}-help`,
    });
    refs.input.value = t.label || '';
    refs.input.addEventListener('input', () => { refs.dirty = true; });
    refs.save = el('button', { type: 'submit', class: 'secondary' }, 'Save name');
    refs.remove = el('button', { type: 'button', class: 'secondary', onclick: () => removeSubdomain(id, refs) }, 'Remove name');
    refs.subHelp = el('p', { id: `${inputId}-help`, class: 'muted small' });
    refs.subForm = el('form', { class: 'subdomain', novalidate: true },
      el('label', { for: inputId }, 'Custom subdomain'),
      el('div', { class: 'row' }, refs.input, refs.save, refs.remove),
      refs.subHelp);
    refs.subForm.addEventListener('submit', (ev) => { ev.preventDefault(); saveSubdomain(id, refs); });

    // Every card has the same button names: tie them to the card's title for screen readers.
    refs.tokenBtn = el('button', { type: 'button', class: 'create-token', 'aria-describedby': `title-${id}`, onclick: () => createToken(id, refs) }, 'Create token');
    refs.delBtn = el('button', { type: 'button', class: 'danger delete-tunnel', 'aria-describedby': `title-${id}`, onclick: () => askDelete(refs, true) }, 'Delete tunnel');
    refs.confirm = el('div', { class: 'confirm', role: 'group', hidden: true },
      el('span', {}, 'Delete this tunnel for good? Its tokens stop working at once.'),
      el('button', { type: 'button', class: 'danger', onclick: () => deleteTunnel(id, refs) }, 'Yes, delete'),
      el('button', { type: 'button', class: 'secondary', onclick: () => askDelete(refs, false) }, 'Keep it'));

    refs.li = el('li', { class: 'tunnel card-inner', 'data-id': id },
      el('div', { class: 'row spread' }, refs.title, refs.pill),
      refs.idText,
      refs.pending,
      el('dl', { class: 'facts grid' },
        el('dt', {}, 'Players'), refs.players,
        el('dt', {}, 'Region'), refs.region,
        el('dt', {}, 'Bandwidth this period'), refs.bytes,
        el('dt', {}, 'Created'), refs.created),
      refs.note,
      refs.subForm,
      el('div', { class: 'row' }, refs.tokenBtn, refs.delBtn),
      refs.confirm,
      refs.error);
    refs.title.setAttribute('id', `title-${id}`);
    refs.li.setAttribute('aria-labelledby', `title-${id}`);
    return refs;
  }

  function updateCard(refs, t) {
    const p = plan();
    setText(refs.title, t.hostname || (t.label ? `${t.label} (name reserved)` : 'No name yet: run the agent'));
    // A reserved name shows in the hostname once the agent reconnects; until then say so.
    const pending = t.label && t.hostname && !String(t.hostname).startsWith(`${t.label}.`);
    showMsg(refs.pending, pending ? `Custom name ${t.label} takes effect when the agent reconnects.` : '');
    const suspended = t.state === 'suspended';
    const pill = suspended ? 'suspended' : t.online ? 'online' : 'offline';
    setText(refs.pill, pill);
    refs.pill.className = `pill ${pill}`;
    setText(refs.players, t.online ? String(Number(t.players) || 0) : '—');
    setText(refs.region, t.region || '—');
    setText(refs.bytes, fmtBytes(t.bytes));
    setText(refs.created, fmtTime(t.created_at));
    if (suspended) {
      const mt = Number(p.max_tunnels) || 0;
      const better = betterPlan((x) => (Number(x.max_tunnels) || 0) > mt);
      showMsg(refs.note, `Suspended: your ${p.title || p.tier} plan allows ${plural(mt, 'tunnel', 'tunnels')}.` +
        (better ? ` Delete another tunnel or upgrade to ${better.title || better.tier}.` : ' Delete another tunnel to run it.'));
    } else {
      showMsg(refs.note, '');
    }

    const allowed = !!p.custom_names;
    refs.input.disabled = !allowed;
    refs.save.disabled = !allowed;
    show(refs.remove, allowed && !!t.label);
    if (allowed) {
      setText(refs.subHelp, '3 to 40 characters: lowercase letters, digits and hyphens (not at either end). Players join with it once the agent reconnects.');
    } else {
      const better = betterPlan((x) => !!x.custom_names);
      setText(refs.subHelp, `Custom subdomains are not part of the ${p.title || p.tier || 'current'} plan` +
        (better ? `: upgrade to ${better.title || better.tier} to choose one.` : '.') +
        ' This tunnel gets a random name.');
    }
    // Never overwrite what the user is typing; otherwise follow the server.
    if (!refs.dirty && document.activeElement !== refs.input && refs.input.value !== (t.label || ''))
      refs.input.value = t.label || '';
  }

  function renderTunnels() {
    const list = $('tunnel-list');
    const seen = new Set();
    let prev = null;
    for (const t of state.tunnels) {
      if (!t || typeof t.id !== 'string') continue;
      seen.add(t.id);
      let refs = state.cards.get(t.id);
      if (!refs) {
        refs = makeCard(t);
        state.cards.set(t.id, refs);
      }
      updateCard(refs, t);
      // keep the API's order, moving nodes only when they are out of place
      const want = prev ? prev.nextSibling : list.firstChild;
      if (want !== refs.li) list.insertBefore(refs.li, want);
      prev = refs.li;
    }
    for (const [id, refs] of state.cards) {
      if (!seen.has(id)) {
        refs.li.remove();
        state.cards.delete(id);
      }
    }
    show($('tunnels-empty'), state.tunnels.length === 0);
  }

  // ---------------------------------------------------------------- rendering: tokens

  function renderTokens() {
    const list = $('token-list');
    const byId = new Map(state.tunnels.map((t) => [t.id, t]));
    // Rebuilt only when something shown changed: the 5 s refresh must not steal focus.
    const key = JSON.stringify([state.tokens, state.tokens.map((k) => {
      const t = byId.get(k.tunnel_id);
      return t ? tunnelName(t) : null;
    }), Math.floor(Date.now() / 60000)]);
    if (state.shown.tokens === key) return;
    state.shown.tokens = key;
    const items = state.tokens.map((k) => {
      const t = byId.get(k.tunnel_id);
      const expired = toDate(k.expires_at) && toDate(k.expires_at).getTime() < Date.now();
      const status = k.revoked_at ? `revoked ${fmtTime(k.revoked_at)}` : expired ? 'expired' : 'active';
      const li = el('li', { class: `token card-inner ${k.revoked_at || expired ? 'dim' : ''}`, 'data-id': k.id },
        el('div', { class: 'row spread' },
          el('code', { class: 'token-id' }, String(k.id)),
          el('span', { class: `pill ${status === 'active' ? 'online' : 'offline'}` }, status)),
        el('dl', { class: 'facts grid' },
          el('dt', {}, 'Tunnel'), el('dd', {}, t ? tunnelName(t) : String(k.tunnel_id || '—')),
          el('dt', {}, 'Created'), el('dd', {}, fmtTime(k.created_at)),
          el('dt', {}, 'Expires'), el('dd', {}, fmtTime(k.expires_at))));
      if (!k.revoked_at && !expired) {
        const err = el('p', { class: 'error', role: 'alert', hidden: true });
        li.append(el('button', {
          type: 'button', class: 'danger', 'aria-label': `Revoke token ${k.id}`,
          onclick: (ev) => revokeToken(k.id, ev.currentTarget, err),
        }, 'Revoke'), err);
      }
      return li;
    });
    list.replaceChildren(...items);
    show($('tokens-empty'), items.length === 0);
  }

  // ---------------------------------------------------------------- actions

  // Disables a button while its request runs, so a double click sends one request.
  async function busy(btn, fn) {
    if (btn) btn.disabled = true;
    try { return await fn(); } finally { if (btn && btn.isConnected) btn.disabled = false; }
  }

  async function authSubmit(ev) {
    ev.preventDefault();
    const action = (ev.submitter && ev.submitter.dataset.action) || 'login';
    const email = $('auth-email').value.trim();
    const password = $('auth-password').value;
    const errNode = $('auth-error');
    if (!email || !email.includes('@')) { showMsg(errNode, 'Enter your email address.'); $('auth-email').focus(); return; }
    if (!password) { showMsg(errNode, 'Enter your password.'); $('auth-password').focus(); return; }
    if (action === 'signup' && password.length < 10) {
      showMsg(errNode, 'Choose a password of at least 10 characters.');
      $('auth-password').focus();
      return;
    }
    showMsg(errNode, '');
    await busy(ev.submitter, async () => {
      try {
        await api('POST', action === 'signup' ? '/v1/signup' : '/v1/login', { email, password });
        $('auth-password').value = '';
        await loadMe();
        await showDash();
      } catch (e) {
        showMsg(errNode, e.message);
      }
    });
  }

  async function logout() {
    await busy($('logout'), async () => {
      try {
        await api('POST', '/v1/logout');
      } catch (e) {
        if (e.status !== 401) { showMsg($('global-error'), e.message); return; }
      }
      showAuth('');
      setText($('auth-error'), '');
      $('auth-email').focus();
    });
  }

  async function createTunnel() {
    const errNode = $('tunnels-error');
    showMsg(errNode, '');
    await busy($('tunnel-create'), async () => {
      try {
        await api('POST', '/v1/tunnels', {});
        await loadTunnels();
        render();
      } catch (e) {
        if (e.status === 401) return onApiFailure(e, errNode);
        let msg = e.message;
        if (e.code === 'plan_limit') {
          const mt = Number(plan().max_tunnels) || 0;
          const better = betterPlan((x) => (Number(x.max_tunnels) || 0) > mt);
          if (better) msg += ` Upgrade to ${better.title || better.tier} for up to ${plural(Number(better.max_tunnels), 'tunnel', 'tunnels')}.`;
        }
        showMsg(errNode, msg);
      }
    });
  }

  function askDelete(refs, on) {
    show(refs.confirm, on);
    show(refs.delBtn, !on);
    if (on) refs.confirm.querySelector('button').focus();
    else refs.delBtn.focus();
  }

  async function deleteTunnel(id, refs) {
    showMsg(refs.error, '');
    try {
      await api('DELETE', `/v1/tunnels/${encodeURIComponent(id)}`);
      await Promise.all([loadTunnels(), loadTokens()]);
      render();
    } catch (e) {
      if (e.status === 404) { await loadTunnels(); render(); return; }
      onApiFailure(e, refs.error);
    }
  }

  async function saveSubdomain(id, refs) {
    const label = refs.input.value.trim().toLowerCase();
    showMsg(refs.error, '');
    // The API checks again (and knows the reserved names); this only saves a round trip.
    if (!/^[a-z0-9-]{3,40}$/.test(label) || label.startsWith('-') || label.endsWith('-') || label.startsWith('xn--')) {
      showMsg(refs.error, 'A subdomain is 3 to 40 characters: lowercase letters, digits and hyphens, not starting or ending with a hyphen.');
      refs.input.focus();
      return;
    }
    await busy(refs.save, async () => {
      try {
        await api('PUT', `/v1/tunnels/${encodeURIComponent(id)}/subdomain`, { label });
        refs.dirty = false;
        await loadTunnels();
        refs.input.value = label;
        render();
      } catch (e) {
        onApiFailure(e, refs.error);
      }
    });
  }

  async function removeSubdomain(id, refs) {
    showMsg(refs.error, '');
    await busy(refs.remove, async () => {
      try {
        await api('DELETE', `/v1/tunnels/${encodeURIComponent(id)}/subdomain`);
        refs.dirty = false;
        refs.input.value = '';
        await loadTunnels();
        render();
      } catch (e) {
        onApiFailure(e, refs.error);
      }
    });
  }

  async function createToken(tunnelId, refs) {
    showMsg(refs.error, '');
    await busy(refs.tokenBtn, async () => {
      try {
        const r = await api('POST', '/v1/tokens', { tunnel_id: tunnelId });
        $('token-command').value = String(r.command || '');
        $('token-value').value = String(r.token || '');
        setText($('copy-status'), '');
        show($('token-new'), true);
        $('token-new').scrollIntoView({ block: 'nearest' });
        $('token-command').focus();
        $('token-command').select();
        await loadTokens();
        renderTokens();
      } catch (e) {
        onApiFailure(e, refs.error);
      }
    });
  }

  // The token exists in this page only until "Done" (or logout): nothing keeps a copy.
  function hideNewToken() {
    $('token-command').value = '';
    $('token-value').value = '';
    setText($('copy-status'), '');
    show($('token-new'), false);
  }

  async function copyFrom(textarea, what) {
    const text = textarea.value;
    let ok = false;
    if (navigator.clipboard && window.isSecureContext) {
      try { await navigator.clipboard.writeText(text); ok = true; } catch { ok = false; }
    }
    if (!ok) {
      // Plain http on a LAN name is not a secure context: fall back to a selection copy.
      textarea.focus();
      textarea.select();
      try { ok = document.execCommand('copy'); } catch { ok = false; }
    }
    setText($('copy-status'), ok ? `${what} copied.` : `Select the ${what.toLowerCase()} and copy it with Ctrl+C.`);
  }

  async function revokeToken(id, btn, errNode) {
    showMsg(errNode, '');
    await busy(btn, async () => {
      try {
        await api('DELETE', `/v1/tokens/${encodeURIComponent(id)}`);
        await loadTokens();
        renderTokens();
      } catch (e) {
        onApiFailure(e, errNode);
      }
    });
  }

  async function checkout(tier) {
    const errNode = $('plan-error');
    showMsg(errNode, '');
    const btn = document.querySelector(`#upgrade button[data-tier="${CSS.escape(tier)}"]`);
    await busy(btn, async () => {
      try {
        const r = await api('POST', '/v1/billing/checkout', { plan: tier });
        const url = new URL(String(r.url || ''), location.href);
        if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new ApiError(0, 'bad_response', 'The checkout link is not a web address.');
        try { sessionStorage.setItem('dvv-checkout', tier); } catch { /* private mode: poll without it */ }
        location.assign(url.href);
      } catch (e) {
        onApiFailure(e, errNode);
      }
    });
  }

  async function portal() {
    const errNode = $('plan-error');
    showMsg(errNode, '');
    await busy($('billing-portal'), async () => {
      try {
        const r = await api('POST', '/v1/billing/portal', {});
        const url = new URL(String(r.url || ''), location.href);
        if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new ApiError(0, 'bad_response', 'The billing link is not a web address.');
        location.assign(url.href);
      } catch (e) {
        if (e.status === 404) showMsg(errNode, 'Managing billing online is not available yet: contact support to change or cancel your plan.');
        else onApiFailure(e, errNode);
      }
    });
  }

  // ?checkout=success: Stripe sends the user back before (or after) its webhook reaches the
  // API; poll /v1/me until the plan shows up, then say so.
  async function checkoutReturn(kind) {
    const banner = $('checkout-banner');
    history.replaceState(null, '', location.pathname);
    if (kind !== 'success') {
      showMsg(banner, 'Checkout canceled: nothing was charged.');
      return;
    }
    let wanted = null;
    try { wanted = sessionStorage.getItem('dvv-checkout'); sessionStorage.removeItem('dvv-checkout'); } catch { wanted = null; }
    const startTier = plan().tier;
    const paidNow = () => {
      const t = plan().tier;
      if (wanted) return t === wanted;
      const info = planInfo(t);
      return !!info && (Number(info.price_cents) || 0) > 0;
    };
    for (let i = 0; i < CHECKOUT_POLL_MAX && state.signedIn; i++) {
      if (paidNow() && plan().status !== 'past_due') {
        showMsg(banner, `Thank you! You are on the ${plan().title || plan().tier} plan now.`);
        banner.className = 'banner ok';
        render();
        return;
      }
      showMsg(banner, 'Payment received. Waiting for the payment provider to confirm it…');
      await new Promise((r) => setTimeout(r, CHECKOUT_POLL_MS));
      try { await loadMe(); } catch (e) { if (e.status === 401) { showAuth('Your session has ended. Log in again.'); return; } }
      if (plan().tier !== startTier) renderPlan();
    }
    if (state.signedIn)
      showMsg(banner, 'Your payment is still being confirmed. This page updates by itself once it is done.');
  }

  // ---------------------------------------------------------------- start

  async function boot() {
    $('auth-form').addEventListener('submit', authSubmit);
    $('logout').addEventListener('click', logout);
    $('tunnel-create').addEventListener('click', createTunnel);
    $('token-done').addEventListener('click', hideNewToken);
    $('copy-command').addEventListener('click', () => copyFrom($('token-command'), 'Command'));
    $('copy-token').addEventListener('click', () => copyFrom($('token-value'), 'Token'));
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && state.signedIn) { stopRefresh(); refresh(); }
    });

    const kind = new URLSearchParams(location.search).get('checkout');
    for (let attempt = 0; ; attempt++) {
      try {
        await loadMe();
        await showDash();
        break;
      } catch (e) {
        if (e.status === 401) { showAuth(''); return; }
        show($('loading'), false);
        showMsg($('global-error'), `${e.message} Retrying…`);
        await new Promise((r) => setTimeout(r, Math.min(30000, 2000 * (attempt + 1))));
      }
    }
    showMsg($('global-error'), '');
    if (kind) await checkoutReturn(kind);
  }

  boot();
})();
