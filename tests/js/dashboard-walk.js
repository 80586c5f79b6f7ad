// Walks the admin dashboard in headless Chromium as a person would, driving the browser over
// the DevTools protocol on a pipe (`--remote-debugging-pipe`: no port, no extra package).
//
//   node tests/js/dashboard-walk.js BASE_URL TOKEN SCREENSHOT_DIR
//
// Prints one JSON object: what each step saw (addresses, texts, whether things stayed open).
// The Rust test (tests/dashboard.rs) starts the proxy and asserts on it. Every wait is bounded.
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const [base, token, shots] = process.argv.slice(2);
const chromium = ['chromium', 'chromium-browser'].find((c) => {
  try { require('child_process').execFileSync(c, ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
});
if (!chromium) { console.error('chromium is needed'); process.exit(2); }
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sd-chromium-'));
const browser = spawn(chromium, [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--remote-debugging-pipe', `--user-data-dir=${profile}`, '--window-size=1280,1000', 'about:blank',
], { stdio: ['ignore', 'ignore', 'ignore', 'pipe', 'pipe'] });
const out = browser.stdio[3];
const inp = browser.stdio[4];

let nextId = 1;
const pending = new Map();
const listeners = [];
let buffer = '';
inp.on('data', (chunk) => {
  buffer += chunk.toString('utf8');
  let end;
  while ((end = buffer.indexOf('\0')) >= 0) {
    const msg = JSON.parse(buffer.slice(0, end));
    buffer = buffer.slice(end + 1);
    if (msg.id && pending.has(msg.id)) {
      const { resolve, reject } = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) reject(new Error(JSON.stringify(msg.error))); else resolve(msg.result);
    } else if (msg.method) {
      for (const l of listeners.slice()) l(msg);
    }
  }
});
function send(method, params = {}, sessionId) {
  const id = nextId++;
  const msg = { id, method, params };
  if (sessionId) msg.sessionId = sessionId;
  out.write(JSON.stringify(msg) + '\0');
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    setTimeout(() => { if (pending.delete(id)) reject(new Error(`${method}: no answer in 20 s`)); }, 20000);
  });
}
function event(name, sessionId, ms = 20000) {
  return new Promise((resolve, reject) => {
    const l = (msg) => {
      if (msg.method === name && msg.sessionId === sessionId) { listeners.splice(listeners.indexOf(l), 1); resolve(msg.params); }
    };
    listeners.push(l);
    setTimeout(() => { const i = listeners.indexOf(l); if (i >= 0) { listeners.splice(i, 1); reject(new Error(`${name}: not seen in ${ms} ms`)); } }, ms);
  });
}

async function main() {
  const { targetId } = await send('Target.createTarget', { url: 'about:blank' });
  const { sessionId: s } = await send('Target.attachToTarget', { targetId, flatten: true });
  await send('Page.enable', {}, s);
  await send('Runtime.enable', {}, s);
  const evaluate = async (expr) => {
    const r = await send('Runtime.evaluate', { expression: expr, awaitPromise: true, returnByValue: true }, s);
    if (r.exceptionDetails) throw new Error(`${expr}: ${JSON.stringify(r.exceptionDetails)}`);
    return r.result.value;
  };
  // Runs `action` (which starts a navigation) and waits for the new page's load event.
  const navigating = async (action) => {
    const loaded = event('Page.loadEventFired', s);
    await action();
    await loaded;
  };
  const go = (url) => navigating(() => send('Page.navigate', { url }, s));
  const click = (selector) => navigating(() => evaluate(`(() => { const a = document.querySelector(${JSON.stringify(selector)}); if (!a) throw new Error('no ' + ${JSON.stringify(selector)}); a.click(); })()`));
  const shot = async (name) => {
    const { data } = await send('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true }, s);
    const file = path.join(shots, `${name}.png`);
    fs.writeFileSync(file, Buffer.from(data, 'base64'));
    return file;
  };
  const here = () => evaluate('location.pathname + location.search');
  const r = { steps: {} };

  // 1. Not signed in: the dashboard sends the browser to the sign-in form.
  await go(base + '/');
  r.steps.unsigned = { at: await here(), form: await evaluate('!!document.querySelector("form.login")') };
  await evaluate(`document.querySelector('input[name=token]').value = 'wrong'`);
  await navigating(() => evaluate('document.querySelector("form.login").submit()'));
  r.steps.wrong = { error: await evaluate('!!document.getElementById("login-error")') };
  await shot('dashboard-login');
  await evaluate(`document.querySelector('input[name=token]').value = ${JSON.stringify(token)}`);
  await navigating(() => evaluate('document.querySelector("form.login").submit()'));
  const { cookies } = await send('Network.getCookies', { urls: [base + '/'] }, s).catch(() => ({ cookies: [] }));
  r.steps.signed = {
    at: await here(),
    cookieVisibleToScript: await evaluate('document.cookie'),
    cookies: cookies.map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite })),
    tokenInPage: (await evaluate('document.documentElement.outerHTML')).includes(token),
  };
  r.shots = [await shot('dashboard-overview')];

  // 2. Route → field → exchange, each with an address of its own; back returns.
  await click('#routes a[href^="/route/"]');
  r.steps.route = { at: await here(), fields: await evaluate('document.querySelectorAll("#fields a[href*=\\"/field?\\"]").length') };
  r.shots.push(await shot('dashboard-route'));
  await click('#fields a[href*="/field?"]');
  r.steps.field = {
    at: await here(),
    accounts: await evaluate('[...document.querySelectorAll("#accounts td:first-child")].map(td => td.textContent)'),
    examples: await evaluate('document.querySelectorAll("#examples a[href^=\\"/exchange/\\"]").length'),
  };
  r.shots.push(await shot('dashboard-field'));
  await click('#examples a[href^="/exchange/"]');
  r.steps.exchange = {
    at: await here(),
    marked: await evaluate('[...document.querySelectorAll("mark.focus")].map(m => m.title)'),
    sides: await evaluate('document.querySelectorAll("pre.doc").length'),
  };
  r.shots.push(await shot('dashboard-exchange'));
  // Back may restore the page from the back/forward cache (no load event): poll the address.
  const from = await here();
  await evaluate('history.back()');
  for (let i = 0; i < 200 && (await here()) === from; i++) await evaluate('new Promise(r => setTimeout(r, 50))');
  await evaluate('new Promise(r => document.readyState === "complete" ? r() : addEventListener("load", r))');
  r.steps.back = { at: await here() };

  // 3. A filter picked in the form becomes the address (and survives a reload).
  await go(base + '/?since=1h');
  await navigating(() => evaluate(`(() => { const s = document.querySelector('select[name=account]'); s.value = 'globex'; s.dispatchEvent(new Event('change')); })()`));
  r.steps.filtered = {
    at: await here(),
    selected: await evaluate('document.querySelector("select[name=account]").value'),
    latest: await evaluate('[...document.querySelectorAll("#live details summary")].map(x => x.textContent)'),
  };
  await navigating(() => send('Page.reload', {}, s));
  r.steps.filteredReloaded = { selected: await evaluate('document.querySelector("select[name=account]").value') };
  r.shots.push(await shot('dashboard-filtered'));

  // 4. What the reader expanded stays expanded across the live refresh and a reload.
  const key = await evaluate('(() => { const d = document.querySelector("#live details[data-key]"); d.open = true; return d.dataset.key; })()');
  await evaluate('new Promise(r => setTimeout(r, 0))');
  await evaluate('window.shadowdiffRefresh()');
  const openAfter = () => evaluate(`document.querySelector('#live details[data-key="${key}"]').open`);
  r.steps.refresh = { key, openAfterRefresh: await openAfter(), updated: await evaluate('document.getElementById("updated").textContent') };
  await navigating(() => send('Page.reload', {}, s));
  r.steps.refresh.openAfterReload = await openAfter();

  // 5. Without JavaScript the pages are whole (server-rendered): the filter form still works.
  await send('Emulation.setScriptExecutionDisabled', { value: true }, s);
  await go(base + '/accounts?since=1h');
  r.steps.noScript = { rows: await send('Runtime.evaluate', { expression: 'document.querySelectorAll("#account-table tr").length', returnByValue: true }, s).then((x) => x.result.value) };
  r.shots.push(await shot('dashboard-accounts'));
  console.log(JSON.stringify(r));
}

main().then(() => 0, (err) => {
  console.error(String((err && err.stack) || err));
  return 1;
}).then((code) => {
  browser.kill();
  try { fs.rmSync(profile, { recursive: true, force: true }); } catch {}
  process.exit(code);
});
