#!/usr/bin/env node
// Non-interactive OpenID Connect authorization-code login against the test
// provider (provider.mjs), printing ONLY the resulting id_token on stdout.
//
//   node tests/idp/login.mjs --issuer https://127.0.0.1:P --ca CERT.pem --user alice
//
// TLS is verified against CERT.pem only (a dedicated https.Agent with `ca`);
// verification is never disabled. The flow: discovery -> GET authorization
// endpoint -> dev login form (login = --user) -> consent form -> redirect to
// the client's redirect_uri (captured, never fetched) -> POST token endpoint
// with client_secret_post -> print id_token.

import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import { parseArgs } from 'node:util';

const CLIENT_ID = 'vkube';
const CLIENT_SECRET = 'vkube-secret';
const REDIRECT_URI = 'https://127.0.0.1/callback';
const SCOPE = 'openid email groups';
const MAX_STEPS = 20;
const TIMEOUT_MS = 15000;

class LoginError extends Error {}
const fail = (msg) => { throw new LoginError(msg); };

const USAGE = 'usage: login.mjs --issuer https://127.0.0.1:P --ca CERT.pem --user NAME';

function parse() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        issuer: { type: 'string' },
        ca: { type: 'string' },
        user: { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    fail(`${err.message}\n${USAGE}`);
  }
  for (const k of ['issuer', 'ca', 'user']) if (!values[k]) fail(`missing --${k}\n${USAGE}`);
  return values;
}

// ---- minimal cookie jar (name+path keyed, single host) --------------------
class CookieJar {
  #cookies = new Map(); // `${name};${path}` -> { name, value, path }

  store(setCookieHeaders, requestUrl) {
    for (const header of setCookieHeaders ?? []) {
      const [pair, ...attrs] = header.split(';');
      const eq = pair.indexOf('=');
      if (eq < 1) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let cpath;
      let expired = false;
      for (const attr of attrs) {
        const [k, ...rest] = attr.split('=');
        const key = k.trim().toLowerCase();
        const v = rest.join('=').trim();
        if (key === 'path') cpath = v;
        if (key === 'max-age' && Number(v) <= 0) expired = true;
        if (key === 'expires' && Date.parse(v) <= Date.now()) expired = true;
      }
      if (!cpath || !cpath.startsWith('/')) {
        const p = requestUrl.pathname;
        cpath = p.lastIndexOf('/') > 0 ? p.slice(0, p.lastIndexOf('/')) : '/';
      }
      const id = `${name};${cpath}`;
      if (expired || value === '') this.#cookies.delete(id);
      else this.#cookies.set(id, { name, value, path: cpath });
    }
  }

  header(url) {
    const p = url.pathname;
    const matching = [...this.#cookies.values()].filter((c) => p === c.path
      || (p.startsWith(c.path) && (c.path.endsWith('/') || p[c.path.length] === '/')));
    matching.sort((a, b) => b.path.length - a.path.length);
    return matching.map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

// ---- HTTPS helper -----------------------------------------------------------
function request(agent, jar, url, { method = 'GET', form } = {}) {
  return new Promise((resolve, reject) => {
    const body = form ? new URLSearchParams(form).toString() : undefined;
    const headers = { accept: 'text/html,application/json' };
    const cookie = jar?.header(url);
    if (cookie) headers.cookie = cookie;
    if (body !== undefined) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      headers['content-length'] = Buffer.byteLength(body);
    }
    const req = https.request(url, { method, agent, headers, timeout: TIMEOUT_MS }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        jar?.store(res.headers['set-cookie'], url);
        resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${TIMEOUT_MS} ms`)));
    req.on('error', (err) => reject(new LoginError(`${method} ${url.origin}${url.pathname}: ${err.code ?? ''} ${err.message}`)));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function parseJson(res, what) {
  try {
    return JSON.parse(res.body);
  } catch {
    return fail(`${what}: HTTP ${res.status}, expected JSON, got: ${res.body.slice(0, 300)}`);
  }
}

const htmlDecode = (s) => s
  .replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<')
  .replace(/&gt;/g, '>').replace(/&#x2F;/gi, '/').replace(/&amp;/g, '&');

function attr(tag, name) {
  const m = tag.match(new RegExp(`\\s${name}\\s*=\\s*("([^"]*)"|'([^']*)'|([^\\s>]+))`, 'i'));
  return m ? htmlDecode(m[2] ?? m[3] ?? m[4] ?? '') : undefined;
}

// Extract the first <form> of an interaction page and fill it in.
function fillForm(html, pageUrl, user) {
  const formMatch = html.match(/<form\b([^>]*)>([\s\S]*?)<\/form>/i);
  if (!formMatch) return undefined;
  const [, formAttrs, inner] = formMatch;
  const action = new URL(attr(formAttrs, 'action') ?? pageUrl.href, pageUrl);
  const method = (attr(formAttrs, 'method') ?? 'GET').toUpperCase();
  const fields = {};
  for (const [tag] of inner.matchAll(/<input\b[^>]*>/gi)) {
    const name = attr(tag, 'name');
    if (!name) continue;
    const type = (attr(tag, 'type') ?? 'text').toLowerCase();
    if (name === 'login' || type === 'email') fields[name] = user;
    else if (type === 'password') fields[name] = 'any-password';
    else fields[name] = attr(tag, 'value') ?? '';
  }
  return { action, method, fields };
}

async function main() {
  const opts = parse();
  let issuer;
  try {
    issuer = new URL(opts.issuer);
  } catch {
    fail(`invalid --issuer ${opts.issuer}`);
  }
  if (issuer.protocol !== 'https:') fail(`--issuer must be https, got ${opts.issuer}`);
  let ca;
  try {
    ca = fs.readFileSync(opts.ca);
  } catch (err) {
    fail(`cannot read --ca ${opts.ca}: ${err.message}`);
  }
  // Trust ONLY the given CA for these requests; verification stays on.
  const agent = new https.Agent({ ca, keepAlive: false });

  // Discovery
  const issuerStr = opts.issuer.replace(/\/$/, '');
  const discoUrl = new URL(`${issuerStr}/.well-known/openid-configuration`);
  const discoRes = await request(agent, null, discoUrl);
  if (discoRes.status !== 200) fail(`discovery ${discoUrl}: HTTP ${discoRes.status}: ${discoRes.body.slice(0, 300)}`);
  const disco = parseJson(discoRes, 'discovery');
  if (disco.issuer !== issuerStr) fail(`discovery issuer mismatch: got ${disco.issuer}, expected ${issuerStr}`);
  for (const k of ['authorization_endpoint', 'token_endpoint']) if (!disco[k]) fail(`discovery lacks ${k}`);

  // Authorization request (with PKCE S256, state and nonce)
  const state = randomBytes(16).toString('base64url');
  const nonce = randomBytes(16).toString('base64url');
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const authUrl = new URL(disco.authorization_endpoint);
  authUrl.search = new URLSearchParams({
    client_id: CLIENT_ID,
    redirect_uri: REDIRECT_URI,
    response_type: 'code',
    scope: SCOPE,
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  }).toString();

  const jar = new CookieJar();
  let next = { url: authUrl, method: 'GET' };
  let callback;
  const seen = [];
  for (let step = 0; step < MAX_STEPS && !callback; step += 1) {
    const { url, method, form } = next;
    if (url.origin !== issuer.origin) fail(`refusing to follow to foreign origin ${url.origin} (${url.href})`);
    const res = await request(agent, jar, url, { method, form });
    seen.push(`${method} ${url.pathname} -> ${res.status}`);
    if (res.status >= 300 && res.status < 400) {
      if (!res.headers.location) fail(`redirect without Location from ${url.pathname}`);
      const loc = new URL(res.headers.location, url);
      if (`${loc.origin}${loc.pathname}` === REDIRECT_URI) {
        callback = loc;
        break;
      }
      next = { url: loc, method: 'GET' };
      continue;
    }
    if (res.status === 200 && /<form\b/i.test(res.body)) {
      const f = fillForm(res.body, url, opts.user);
      if (!f) fail(`could not parse form on ${url.pathname}`);
      next = f.method === 'POST'
        ? { url: f.action, method: 'POST', form: f.fields }
        : { url: new URL(`${f.action.origin}${f.action.pathname}?${new URLSearchParams(f.fields)}`), method: 'GET' };
      continue;
    }
    const text = res.body.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 400);
    fail(`unexpected response during authorization: ${method} ${url.pathname} -> HTTP ${res.status}: ${text}`);
  }
  if (!callback) fail(`no redirect to ${REDIRECT_URI} after ${MAX_STEPS} steps: ${seen.join(', ')}`);

  const cb = callback.searchParams;
  if (cb.get('error')) fail(`authorization error: ${cb.get('error')}: ${cb.get('error_description') ?? ''}`);
  if (cb.get('state') !== state) fail(`state mismatch in callback (got ${cb.get('state')})`);
  if (cb.has('iss') && cb.get('iss') !== issuerStr) fail(`iss mismatch in callback (got ${cb.get('iss')})`);
  const code = cb.get('code');
  if (!code) fail(`no code in callback ${callback.href}`);

  // Token request (client_secret_post)
  const tokenRes = await request(agent, null, new URL(disco.token_endpoint), {
    method: 'POST',
    form: {
      grant_type: 'authorization_code',
      code,
      redirect_uri: REDIRECT_URI,
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      code_verifier: verifier,
    },
  });
  const tokens = parseJson(tokenRes, 'token endpoint');
  if (tokenRes.status !== 200) fail(`token endpoint: HTTP ${tokenRes.status}: ${tokens.error ?? ''} ${tokens.error_description ?? ''}`);
  if (typeof tokens.id_token !== 'string') fail('token response has no id_token');

  // Sanity-check the nonce (signature verification is the consumer's job).
  let payload;
  try {
    payload = JSON.parse(Buffer.from(tokens.id_token.split('.')[1], 'base64url').toString('utf8'));
  } catch {
    fail('id_token is not a decodable JWT');
  }
  if (payload.nonce !== nonce) fail('nonce mismatch in id_token');

  process.stdout.write(`${tokens.id_token}\n`);
}

main().catch((err) => {
  const msg = err instanceof LoginError ? err.message : (err?.stack ?? String(err));
  process.stderr.write(`login.mjs: error: ${msg}\n`);
  process.exit(1);
});
