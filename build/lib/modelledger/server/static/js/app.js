// The router: hash routes (#/models/credit-risk/versions/3) to the pages of pages.js. Every page
// gets the signed-in member (from /whoami) and reads everything else from the API itself.

import { api, ApiError, clearToken, getToken, setToken } from "./api.js";
import { finishSignIn } from "./oidc.js";
import { explain, h, href } from "./dom.js";
import * as pages from "./pages.js";
import { unscoped } from "./roles.js";

const ROUTES = [
  [/^signin$/, pages.signIn, { open: true }],
  [/^$/, pages.models],
  [/^models$/, pages.models],
  [/^models\/([^/]+)$/, pages.model],
  [/^models\/([^/]+)\/versions\/([^/]+)$/, pages.version],
  [/^models\/([^/]+)\/versions\/([^/]+)\/lineage$/, pages.versionLineage],
  [/^diff$/, pages.diff],
  [/^datasets$/, pages.datasets],
  [/^datasets\/([^/]+)\/versions\/([^/]+)$/, pages.dataset],
  [/^datasets\/([^/]+)\/versions\/([^/]+)\/lineage$/, pages.datasetLineage],
  [/^audit$/, pages.audit],
  [/^trace$/, pages.trace],
  [/^receipt$/, pages.receipt],
  [/^at$/, pages.productionAt],
];

let me = null;
let notice = null; // shown at the top of the next page rendered (the result of an action)

export function setNotice(el) {
  notice = el;
}

async function whoami() {
  if (me || !getToken()) return me;
  me = await api("/whoami");
  return me;
}

export function signedOut() {
  me = null;
  clearToken();
  location.hash = "#/signin";
}

function renderHeader() {
  const nav = document.getElementById("nav");
  const who = document.getElementById("me");
  nav.replaceChildren();
  who.replaceChildren();
  if (!me) return;
  const items = [
    ["#/models", "Models"],
    unscoped(me) ? ["#/datasets", "Data sets"] : null,
    ["#/audit", "Audit log"],
    ["#/trace", "Trace a prediction"],
    ["#/receipt", "Verify a receipt"],
    ["#/at", "Production at a time"],
  ].filter(Boolean);
  nav.append(h("ul", null, items.map(([target, text]) => h("li", null, h("a", { href: target }, text)))));
  who.append(
    h("span", { id: "signed-in-as" }, `${me.name} · ${me.roles.join(", ")}${unscoped(me) ? "" : ` on ${me.models.join(", ")}`}`),
    h("button", { type: "button", class: "link", onclick: signedOut }, "Sign out"),
  );
}

async function route() {
  const main = document.getElementById("main");
  delete main.dataset.ready;
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, search] = raw.split("?", 2);
  const query = new URLSearchParams(search ?? "");
  const found = ROUTES.map(([pattern, page, options]) => [pattern.exec(path), page, options ?? {}]).find(([m]) => m);
  try {
    if (!found?.[2].open && !(await whoami())) {
      location.hash = "#/signin";
      return;
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      signedOut();
      return;
    }
    throw err;
  }
  renderHeader();
  const view = h("div", { class: "page" });
  let after = null;
  if (notice) {
    view.append(notice);
    notice = null;
  }
  if (!found) {
    view.append(h("h1", null, "No such page"), h("p", null, h("a", { href: href(["models"]) }, "Back to the models")));
  } else {
    const [match, page] = found;
    const params = match.slice(1).map(decodeURIComponent);
    try {
      after = await page({ view, params, query, me, rerender: route, setNotice });
    } catch (err) {
      view.append(explain(err));
      if (err instanceof ApiError && err.status === 401) signedOut();
    }
  }
  main.replaceChildren(view);
  // what needs the page in the document (a graph measures its container) runs now
  if (typeof after === "function") {
    try {
      await after();
    } catch (err) {
      view.append(explain(err));
    }
  }
  const heading = main.querySelector("h1");
  document.title = heading ? `${heading.textContent} · modelledger` : "modelledger";
  main.dataset.ready = location.hash; // tests and screen readers: this page has finished loading
  main.focus({ preventScroll: true });
}

export function resetMember(member) {
  me = member;
}

// back from the OIDC provider (/ui/?code=...): the ID token becomes the bearer, then the page
async function start() {
  try {
    const token = await finishSignIn();
    if (token) setToken(token);
  } catch (err) {
    setNotice(explain(new ApiError(0, "OIDC", err.message)));
    history.replaceState(null, "", "/ui/#/signin"); // no hashchange: the one route() below shows it
  }
  window.addEventListener("hashchange", route);
  route();
}

start();
