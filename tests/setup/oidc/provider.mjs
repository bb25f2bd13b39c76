// A real OpenID Connect provider (the certified `oidc-provider` package) for ScriptHut's
// single sign-on tests. tests/oidc_server.py starts it and reads its first stdout line.
//
//   CLIENT_ID, CLIENT_SECRET  the one confidential client (code flow, client_secret_basic)
//   REDIRECT_URIS             that client's redirect URIs, space-separated
//   USERS_FILE                JSON {"carol": {"password": "...", "claims": {"groups": [...], ...}}},
//                             read again at every sign-in, so a test can change a user's groups
//
// It listens on 127.0.0.1 on a free port and prints {"issuer": "http://127.0.0.1:PORT"} once
// it is ready. The sign-in page (/interaction/<uid>) checks the password from USERS_FILE and
// grants every scope the client asked for: no consent screen. SIGTERM stops it.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const { CLIENT_ID, CLIENT_SECRET, REDIRECT_URIS, USERS_FILE } = process.env;
if (!CLIENT_ID || !CLIENT_SECRET || !REDIRECT_URIS || !USERS_FILE) {
  console.error('CLIENT_ID, CLIENT_SECRET, REDIRECT_URIS and USERS_FILE must be set');
  process.exit(2);
}

const users = () => JSON.parse(readFileSync(USERS_FILE, 'utf8'));

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(uid, clientId, error) {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · Test IdP</title>
<style>
  body { font: 15px system-ui, sans-serif; background: #1e293b; color: #0f172a; }
  main { max-width: 340px; margin: 5rem auto; background: #fff; border-radius: 8px; padding: 1.6rem; }
  h1 { font-size: 1.3rem; margin: 0 0 .3rem; } p { color: #475569; margin: 0 0 1rem; }
  label { display: block; font-weight: 600; margin-top: .6rem; }
  input { width: 100%; box-sizing: border-box; padding: .45rem; margin-top: .2rem; }
  button { margin-top: 1.1rem; width: 100%; padding: .55rem; background: #7c3aed; color: #fff;
           border: 0; border-radius: 6px; font-weight: 600; cursor: pointer; }
  .error { background: #fee2e2; color: #991b1b; padding: .5rem; border-radius: 6px; }
</style></head>
<body><main>
  <h1>Test IdP</h1>
  <p>Sign in to continue to <b>${escape(clientId)}</b></p>
  ${error ? `<div class="error">${escape(error)}</div>` : ''}
  <form method="post" action="/interaction/${escape(uid)}">
    <label for="login">Username</label><input id="login" name="login" autocomplete="username" autofocus>
    <label for="password">Password</label><input id="password" name="password" type="password">
    <button type="submit">Sign in</button>
  </form>
</main></body></html>`;
}

async function formBody(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

async function signIn(provider, req, res, details) {
  const form = await formBody(req);
  const login = form.get('login') || '';
  const user = Object.hasOwn(users(), login) ? users()[login] : undefined;
  if (!user || user.password !== form.get('password')) {
    res.writeHead(401, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page(details.uid, details.params.client_id, 'Wrong username or password.'));
    return;
  }
  const grant = new provider.Grant({ accountId: login, clientId: details.params.client_id });
  grant.addOIDCScope(details.params.scope);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { login: { accountId: login }, consent: { grantId } }, {
    mergeWithLastSubmission: false,
  });
}

async function interaction(provider, req, res) {
  const details = await provider.interactionDetails(req, res);
  if (req.method === 'POST') {
    await signIn(provider, req, res, details);
    return;
  }
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(page(details.uid, details.params.client_id));
}

function configuration() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        redirect_uris: REDIRECT_URIS.split(' '),
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    scopes: ['openid', 'email', 'profile', 'groups'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'given_name', 'family_name', 'preferred_username'],
      groups: ['groups'],
    },
    async findAccount(ctx, sub) {
      const user = Object.hasOwn(users(), sub) ? users()[sub] : undefined;
      if (!user) return undefined;
      return { accountId: sub, claims: async () => ({ sub, preferred_username: sub, ...user.claims }) };
    },
    interactions: { url: (ctx, details) => `/interaction/${details.uid}` },
    features: { devInteractions: { enabled: false } },
    jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'test-key', use: 'sig', alg: 'RS256' }] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
  };
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration());
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (!req.url.startsWith('/interaction/')) {
      callback(req, res);
      return;
    }
    interaction(provider, req, res).catch((err) => {
      console.error(err);
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`sign-in failed: ${err.message}`);
    });
  });
  console.log(JSON.stringify({ issuer }));
});
process.on('SIGTERM', () => process.exit(0));
