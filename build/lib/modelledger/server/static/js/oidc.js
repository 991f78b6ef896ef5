// Sign-in through the server's OIDC provider: the authorization-code flow with PKCE, in the
// browser. The provider sends the user back to /ui/?code=...&state=...; the code and the PKCE
// verifier (kept in this tab's sessionStorage) are exchanged at the provider's token endpoint
// for an ID token, which becomes the bearer the server checks as any other JWT.

const PENDING = "modelledger.oidc";

function base64url(bytes) {
  let text = "";
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString() {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

function redirectUri() {
  return `${location.origin}/ui/`;
}

export async function serverConfig() {
  const response = await fetch("/ui/config.json");
  return response.ok ? response.json() : { oidc: null };
}

async function discover(issuer) {
  const url = `${issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
  let response;
  try {
    response = await fetch(url);
  } catch (exc) {
    throw new Error(`the identity provider did not answer at ${url} (${exc.message})`);
  }
  if (!response.ok) throw new Error(`the identity provider answered ${response.status} at ${url}`);
  return response.json();
}

// Go to the provider's sign-in page.
export async function startSignIn({ issuer, client_id }) {
  const provider = await discover(issuer);
  const verifier = randomString();
  const state = randomString();
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state, issuer, client_id, back: location.hash }));
  const params = new URLSearchParams({
    response_type: "code",
    client_id,
    redirect_uri: redirectUri(),
    scope: "openid email profile",
    state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  });
  location.assign(`${provider.authorization_endpoint}?${params}`);
}

// On the way back from the provider: the ID token, or null when this is not a sign-in return.
export async function finishSignIn() {
  const back = new URLSearchParams(location.search);
  if (!back.has("code") && !back.has("error")) return null;
  const pending = JSON.parse(sessionStorage.getItem(PENDING) ?? "null");
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, "", `/ui/${pending?.back && pending.back !== "#/signin" ? pending.back : "#/models"}`);
  if (back.has("error")) throw new Error(`the identity provider refused: ${back.get("error_description") ?? back.get("error")}`);
  if (!pending || back.get("state") !== pending.state) throw new Error("this sign-in was not started in this tab (state mismatch): sign in again");
  const provider = await discover(pending.issuer);
  const response = await fetch(provider.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: back.get("code"),
      redirect_uri: redirectUri(),
      client_id: pending.client_id,
      code_verifier: pending.verifier,
    }),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok || !answer.id_token) {
    throw new Error(`the identity provider gave no ID token (${response.status}: ${answer.error_description ?? answer.error ?? "no id_token"})`);
  }
  return answer.id_token;
}
