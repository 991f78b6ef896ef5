// Building the page. Everything from the registry goes in as text (textContent, attributes),
// never as HTML.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

// A link inside the UI: path segments are encoded here, so a name cannot change the route.
export function href(parts, params) {
  const path = parts.map((p) => encodeURIComponent(String(p))).join("/");
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params ?? {})) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return `#/${path}${text ? `?${text}` : ""}`;
}

export const link = (parts, text, params, attrs) => h("a", { href: href(parts, params), ...attrs }, text);

// A link for a registry URI (models:/x/3, datasets:/x/2, models:/x@alias), or the text itself.
export function uriLink(uri, text) {
  const ref = parseUri(uri);
  if (!ref) return h("code", null, uri);
  if (ref.kind === "model")
    return link(["models", ref.name, "versions", ref.version], text ?? uri, null, { class: "uri" });
  if (ref.kind === "alias")
    return link(["models", ref.name, "versions", ref.alias], text ?? uri, null, { class: "uri" });
  return link(["datasets", ref.name, "versions", ref.version], text ?? uri, null, { class: "uri" });
}

export function parseUri(uri) {
  let m = /^models:\/([^/@#]+)\/(\d+)$/.exec(uri ?? "");
  if (m) return { kind: "model", name: m[1], version: m[2] };
  m = /^models:\/([^/@#]+)@([^/@#]+)$/.exec(uri ?? "");
  if (m) return { kind: "alias", name: m[1], alias: m[2] };
  m = /^datasets:\/([^/@#]+)\/(\d+)$/.exec(uri ?? "");
  if (m) return { kind: "dataset", name: m[1], version: m[2] };
  return null;
}

export function badge(stage) {
  if (!stage) return h("span", { class: "badge" }, "unknown");
  return h("span", { class: `badge stage-${stage}` }, stage);
}

export function time(value) {
  if (!value) return "—";
  return h("time", { datetime: value, title: value }, value.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z"));
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function show(value) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "—");
  if (typeof value === "object") return h("code", { class: "json" }, JSON.stringify(value));
  return String(value);
}

// A list of elements (one line per approval, say) is shown as they are, not as JSON.
function cell(value) {
  if (value instanceof Node) return value;
  if (Array.isArray(value) && value.every((v) => v instanceof Node)) return value.length ? h("div", null, value) : show(null);
  return show(value);
}

// A two-column table of a mapping.
export function kv(rows, caption) {
  const entries = Array.isArray(rows) ? rows : Object.entries(rows ?? {});
  if (!entries.length) return h("p", { class: "muted" }, `No ${caption ?? "entries"}.`);
  return scroll(
    h(
      "table",
      { class: "kv" },
      caption ? h("caption", { class: "sr-only" }, caption) : null,
      h(
        "tbody",
        null,
        entries.map(([key, value]) => h("tr", null, h("th", { scope: "row" }, key), h("td", null, cell(value)))),
      ),
    ),
  );
}

// A table: columns are [heading, row -> cell].
export function table(columns, rows, attrs) {
  return scroll(
    h(
      "table",
      attrs,
      h("thead", null, h("tr", null, columns.map(([title]) => h("th", { scope: "col" }, title)))),
      h(
        "tbody",
        null,
        rows.map((row) => h("tr", null, columns.map(([, cell]) => h("td", null, cell(row))))),
      ),
    ),
  );
}

export const scroll = (el) => h("div", { class: "scroll" }, el);

export function section(title, ...children) {
  const id = `s-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), children);
}

export function explain(err) {
  // A refusal the user can act on, in words, with the server's own message under it.
  const message = err?.message ?? String(err);
  let title = "Something went wrong";
  if (err?.kind === "OIDC") title = "Sign-in through the identity provider failed";
  else if (err?.status === 401) title = "Your token was not accepted: sign in again";
  else if (err?.status === 403 && /four-eyes/.test(message)) title = "Refused by the four-eyes rule";
  else if (err?.status === 403 && /is protected/.test(message)) title = "Refused: this alias is protected";
  else if (err?.status === 403) title = "Not allowed (403)";
  else if (err?.status === 404) title = "Not found";
  else if (err?.status === 409) title = "Not possible in the version's current state (409)";
  else if (err?.status === 400 || err?.status === 422) title = "The request was not valid";
  else if (err?.status === 0) title = "The server did not answer";
  return h(
    "div",
    { class: "error", role: "alert", dataset: { status: String(err?.status ?? "") } },
    h("strong", null, title),
    h("p", null, message),
  );
}
