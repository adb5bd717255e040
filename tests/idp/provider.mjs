#!/usr/bin/env node
// Test-only OpenID Provider for vkube end-to-end tests, built on the
// third-party `oidc-provider` package (a certified OP implementation).
//
//   node tests/idp/provider.mjs --port P --cert CERT.pem --key KEY.pem \
//        --signing-key SIGNING.json
//
// Serves HTTPS on 127.0.0.1:P (or --host ADDRESS) with issuer exactly `https://ADDRESS:P`.
// Prints exactly one line `ready https://127.0.0.1:P` on stdout once it is
// listening; everything else goes to stderr. Exits 0 on SIGTERM/SIGINT.
//
// The ID token signing key is a private RSA JWK kept in SIGNING.json. If the
// file is missing a new RSA-2048 key with a fresh random kid is generated and
// written there, so deleting the file and restarting rotates the key.

import { randomBytes, generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { parseArgs } from 'node:util';

// oidc-provider prints some notices with console.info (i.e. to stdout). Keep
// stdout reserved for the single `ready` line: route every console output
// helper to stderr *before* the library is loaded.
const toStderr = (...args) => console.error(...args);
console.log = toStderr;
console.info = toStderr;
console.debug = toStderr;

const log = (...args) => console.error('[idp]', ...args);

function die(msg) {
  console.error(`[idp] error: ${msg}`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      port: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      'signing-key': { type: 'string' },
      // An address of this machine other than loopback (a bridge the tests made), so pods
      // of the test host cluster reach the issuer too. Default 127.0.0.1.
      host: { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (err) {
  die(`${err.message}\nusage: provider.mjs --port P --cert CERT.pem --key KEY.pem --signing-key SIGNING.json`);
}
for (const name of ['port', 'cert', 'key', 'signing-key']) {
  if (!args[name]) die(`missing --${name}\nusage: provider.mjs --port P --cert CERT.pem --key KEY.pem --signing-key SIGNING.json`);
}
const port = Number(args.port);
if (!Number.isInteger(port) || port < 1 || port > 65535) die(`invalid --port ${args.port}`);

const HOST = args.host || '127.0.0.1';
if (!/^(127\.|198\.1[89]\.)/.test(HOST)) die(`--host ${HOST}: tests stay on loopback or the test bridge (127.0.0.0/8, 198.18.0.0/15)`);
const ISSUER = `https://${HOST}:${port}`;

// ---- TLS material ---------------------------------------------------------
let tlsCert;
let tlsKey;
try {
  tlsCert = fs.readFileSync(args.cert);
  tlsKey = fs.readFileSync(args.key);
} catch (err) {
  die(`cannot read TLS cert/key: ${err.message}`);
}

// ---- ID token signing key -------------------------------------------------
function loadOrCreateSigningKey(file) {
  if (fs.existsSync(file)) {
    let jwk;
    try {
      jwk = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (err) {
      die(`cannot parse signing key ${file}: ${err.message}`);
    }
    if (jwk.kty !== 'RSA' || !jwk.d) die(`signing key ${file} is not a private RSA JWK`);
    if (!jwk.kid) die(`signing key ${file} has no "kid"`);
    log(`loaded signing key kid=${jwk.kid} from ${file}`);
    return { use: 'sig', alg: 'RS256', ...jwk };
  }
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = {
    ...privateKey.export({ format: 'jwk' }),
    kid: randomBytes(12).toString('base64url'),
    use: 'sig',
    alg: 'RS256',
  };
  // Write atomically so a concurrent reader never sees a partial file.
  const tmp = path.join(path.dirname(path.resolve(file)), `.${path.basename(file)}.${process.pid}.tmp`);
  fs.writeFileSync(tmp, `${JSON.stringify(jwk, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
  log(`generated signing key kid=${jwk.kid} -> ${file}`);
  return jwk;
}
const signingJwk = loadOrCreateSigningKey(args['signing-key']);

// ---- Accounts: any login name is accepted ---------------------------------
async function findAccount(_ctx, id) {
  if (typeof id !== 'string' || id === '') return undefined;
  return {
    accountId: id,
    async claims(_use, _scope, _claims, _rejected) {
      return {
        sub: id,
        email: `${id}@example.com`,
        email_verified: true,
        groups: ['dev', 'ops'],
      };
    },
  };
}

// ---- Provider ----------------------------------------------------------------
const { default: Provider } = await import('oidc-provider');

const configuration = {
  clients: [
    {
      client_id: 'vkube',
      client_secret: 'vkube-secret',
      redirect_uris: ['https://127.0.0.1/callback'],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
      id_token_signed_response_alg: 'RS256',
    },
  ],
  jwks: { keys: [signingJwk] },
  findAccount,
  scopes: ['openid', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // Put the scope-granted claims (email, email_verified, groups) into the ID
  // token itself, not only into the userinfo response.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true }, // any login name, one-click consent
    userinfo: { enabled: true },
  },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 600,
    IdToken: 3600,
    Interaction: 3600,
    Session: 86400,
    Grant: 86400,
  },
};

const provider = new Provider(ISSUER, configuration);

for (const event of ['server_error', 'authorization.error', 'grant.error', 'end_session.error',
  'userinfo.error', 'jwks.error', 'discovery.error', 'introspection.error', 'revocation.error']) {
  provider.on(event, (ctx, err) => {
    log(`${event}: ${err?.name ?? ''} ${err?.message ?? err}${err?.error_description ? ` (${err.error_description})` : ''}`);
  });
}
provider.on('grant.success', (ctx) => log(`token issued for client=${ctx.oidc.client?.clientId}`));

// ---- HTTPS server ------------------------------------------------------------
const server = https.createServer({ cert: tlsCert, key: tlsKey }, provider.callback());
server.on('tlsClientError', (err) => log(`tls client error: ${err.message}`));
server.on('error', (err) => die(`server error: ${err.message}`));
// Track raw sockets so shutdown also drops half-open TLS handshakes.
const sockets = new Set();
server.on('connection', (socket) => {
  sockets.add(socket);
  socket.on('close', () => sockets.delete(socket));
});

server.listen(port, HOST, () => {
  log(`listening on ${ISSUER} (kid=${signingJwk.kid})`);
  process.stdout.write(`ready ${ISSUER}\n`);
});

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  log(`${signal} received, shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  for (const socket of sockets) socket.destroy();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
