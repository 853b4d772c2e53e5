// A real authorization server for oauth.py: npm `oidc-provider` (a certified OpenID provider)
// with the client-credentials grant only, issuing JWT access tokens (RFC 9068) bound to one
// resource by a resource indicator (RFC 8707). Only that resource is served; any other
// `resource` is refused with invalid_target.
//
// Usage: node oauth_provider.mjs PORT RESOURCE CLIENT_ID CLIENT_SECRET
// Its issuer is http://127.0.0.1:PORT; metadata at /.well-known/openid-configuration.
import crypto from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const [port, resource, clientId, clientSecret] = process.argv.slice(2);
if (!clientSecret) {
  console.error('usage: node oauth_provider.mjs PORT RESOURCE CLIENT_ID CLIENT_SECRET');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

// A fresh signing key per run: nothing secret is ever written down.
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = { ...privateKey.export({ format: 'jwk' }), kid: `conf-${Date.now()}`, alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'mcp refunds:write',
  }],
  jwks: { keys: [signing] },
  scopes: ['mcp', 'refunds:write'],
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      // A token request without `resource` gets a token for the gateway all the same.
      defaultResource: async () => resource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (indicator !== resource) throw new errors.InvalidTarget();
        return {
          audience: resource,
          scope: 'mcp refunds:write',
          accessTokenFormat: 'jwt',
          accessTokenTTL: 300,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  // A claim the gateway's policy looks at, so the approver has something to see.
  extraTokenClaims: async () => ({ team: 'payments' }),
});
provider.proxy = false;
provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc-provider ${issuer} for ${resource}`);
});
