// The pages. Each one reads what it shows from the API and renders it into `view`; a page that
// needs to be in the document first (the graph) returns a function that runs once it is.

import { api, ApiError, seg, setToken, clearToken } from "./api.js";
import {
  append,
  badge,
  bytes,
  explain,
  h,
  href,
  kv,
  link,
  parseUri,
  section,
  show,
  table,
  time,
  uriLink,
} from "./dom.js";
import { hasRole, unscoped } from "./roles.js";

const PAGE = 25;
const pageSize = (query) => Math.min(Math.max(Number(query.get("limit")) || PAGE, 1), 1000);

function title(...parts) {
  return h("h1", null, ...parts);
}

function pager(parts, query, nextCursor) {
  const params = Object.fromEntries(query.entries());
  const items = [];
  if (params.cursor) items.push(link(parts, "First page", { ...params, cursor: undefined }));
  if (nextCursor) items.push(link(parts, "Next page", { ...params, cursor: nextCursor }, { rel: "next" }));
  return items.length ? h("nav", { class: "pager", "aria-label": "Pages" }, items) : null;
}

// A form whose fields become the route's query (a GET form, without leaving the UI's hash).
function filterForm(parts, fields, query, submitText = "Search") {
  const form = h(
    "form",
    { class: "filters", role: "search" },
    fields.map(([name, label, attrs]) =>
      h(
        "label",
        null,
        h("span", null, label),
        h("input", { name, value: query.get(name) ?? "", autocomplete: "off", ...attrs }),
      ),
    ),
    h("button", { type: "submit" }, submitText),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = Object.fromEntries([...new FormData(form).entries()].filter(([, v]) => v !== ""));
    location.hash = href(parts, data);
  });
  return form;
}

// ---------------------------------------------------------------------------- sign in

export async function signIn({ view }) {
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
  });
  const status = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "signin" },
    h("label", { for: "token" }, "API token or OIDC token"),
    input,
    h(
      "p",
      { class: "muted" },
      "An API token comes from ",
      h("code", null, "modelledger tokens create"),
      "; a server started with --oidc-issuer also takes a JWT (ID token) of that issuer. " +
        "The token is kept in this tab only (sessionStorage) and sent to this server's API alone.",
    ),
    h("button", { type: "submit" }, "Sign in"),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    try {
      const { resetMember } = await import("./app.js");
      resetMember(await api("/whoami"));
      location.hash = "#/models";
    } catch (err) {
      clearToken();
      status.replaceChildren(explain(err));
    }
  });
  append(view, title("Sign in"), form);
  const { serverConfig, startSignIn } = await import("./oidc.js");
  const { oidc } = await serverConfig();
  if (oidc) {
    const provider = h("div", { "aria-live": "polite" });
    const button = h("button", { type: "button", id: "oidc-signin" }, `Sign in with ${new URL(oidc.issuer).host}`);
    button.addEventListener("click", () => startSignIn(oidc).catch((err) => provider.replaceChildren(explain(new ApiError(0, "OIDC", err.message)))));
    append(view, h("section", { class: "signin", "aria-label": "Single sign-on" }, h("p", null, "Or through your organisation's identity provider:"), button, provider));
  }
}

// ---------------------------------------------------------------------------- models

export async function models({ view, query }) {
  const page = await api("/models", {
    params: {
      prefix: query.get("prefix"),
      tag: query.get("tag") ? query.get("tag").split(",").map((t) => t.trim()) : undefined,
      include_archived: query.get("archived") ? "true" : undefined,
      limit: pageSize(query),
      cursor: query.get("cursor"),
    },
  });
  append(view, 
    title("Models"),
    filterForm(
      ["models"],
      [
        ["prefix", "Name starts with", { type: "search" }],
        ["tag", "Tag (KEY=VALUE, comma-separated)", { placeholder: "team=credit" }],
      ],
      query,
    ),
    page.items.length
      ? table(
          [
            ["Model", (m) => link(["models", m.name], m.name)],
            ["Description", (m) => m.description || h("span", { class: "muted" }, "—")],
            ["Tags", (m) => tags(m.tags)],
            ["Latest version", (m) => link(["models", m.name, "versions", m.latest_version], `v${m.latest_version}`)],
            ["Created", (m) => time(m.created_at)],
          ],
          page.items,
          { id: "models" },
        )
      : h("p", { class: "muted" }, "No model matches."),
    pager(["models"], query, page.next_cursor),
  );
}

function tags(map) {
  const entries = Object.entries(map ?? {});
  if (!entries.length) return h("span", { class: "muted" }, "—");
  return h("ul", { class: "tags" }, entries.map(([k, v]) => h("li", null, `${k}=${v}`)));
}

// ---------------------------------------------------------------------------- a model

export async function model({ view, params: [name], query, me, rerender, setNotice }) {
  const [info, aliases, versions] = await Promise.all([
    api(`/models/${seg(name)}`),
    api(`/models/${seg(name)}/aliases`),
    api(`/models/${seg(name)}/versions`, { params: { limit: pageSize(query), cursor: query.get("cursor") } }),
  ]);
  const metricNames = [...new Set(versions.items.flatMap((v) => Object.keys(v.manifest.metrics ?? {})))].slice(0, 4);
  append(view, 
    title(info.name),
    info.description ? h("p", null, info.description) : null,
    kv(
      [
        ["Tags", tags(info.tags)],
        ["Created", time(info.created_at)],
        ["Latest version", `v${info.latest_version}`],
        ["Archived", info.archived ? "yes" : "no"],
      ],
      "model",
    ),
    section(
      "Aliases",
      aliases.aliases.length
        ? table(
            [
              ["Alias", (a) => h("span", { class: "alias" }, `@${a.alias}`)],
              ["Version", (a) => link(["models", name, "versions", a.version], `v${a.version}`)],
              ["Moved by", (a) => a.moved_by],
              ["Moved at", (a) => time(a.moved_at)],
            ],
            aliases.aliases,
            { id: "aliases" },
          )
        : h("p", { class: "muted" }, "No alias yet."),
      hasRole(me, "deployer", info.name)
        ? actionButton({
            label: "Roll back…",
            heading: `Roll back an alias of ${info.name}`,
            fields: [["alias", "Alias", { value: "production", required: true }]],
            run: async (reason, fields) =>
              api(`/models/${seg(info.name)}/rollback`, { method: "POST", body: { alias: fields.alias, reason } }),
            event: (_result, fields) => ({ subject: `models:/${info.name}@${fields.alias}` }),
            rerender,
            setNotice,
          })
        : null,
    ),
    section(
      "Versions",
      table(
        [
          ["Version", (v) => link(["models", name, "versions", v.version], `v${v.version}`)],
          ["Stage", (v) => badge(v.stage)],
          ["Aliases", (v) => (v.aliases.length ? v.aliases.map((a) => h("span", { class: "alias" }, `@${a}`)) : "—")],
          ...metricNames.map((metric) => [metric, (v) => show(v.manifest.metrics?.[metric])]),
          ["Registered by", (v) => v.created_by],
          ["Registered", (v) => time(v.created_at)],
        ],
        versions.items,
        { id: "versions" },
      ),
      pager(["models", name], query, versions.next_cursor),
    ),
    section("Compare and look back", diffForm(info.name, info.latest_version), atForm(info.name)),
  );
}

function diffForm(name, latest) {
  const a = h("input", { id: "diff-a", name: "a", type: "number", min: 1, value: Math.max(1, latest - 1), required: true });
  const b = h("input", { id: "diff-b", name: "b", type: "number", min: 1, value: latest, required: true });
  const form = h(
    "form",
    { class: "filters" },
    h("label", { for: "diff-a" }, h("span", null, "Version"), a),
    h("label", { for: "diff-b" }, h("span", null, "against version"), b),
    h("button", { type: "submit" }, "Compare"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = href(["diff"], { a: `models:/${name}/${a.value}`, b: `models:/${name}/${b.value}` });
  });
  return form;
}

function atForm(name) {
  return h(
    "p",
    null,
    link(["at"], `Which version was in production at a given time?`, { model: name, alias: "production" }),
  );
}

// ---------------------------------------------------------------------------- actions

let dialogCount = 0;

// A button that opens a dialog asking for a reason (and any other field), runs the action, and
// then shows the ledger event it wrote, or the server's refusal in words.
function actionButton({ label, heading, fields = [], run, event, rerender, setNotice, reasonRequired = true }) {
  const id = `action-${++dialogCount}`;
  const reason = h("textarea", { id: `${id}-reason`, name: "reason", rows: 3, required: reasonRequired });
  const inputs = fields.map(([name, text, attrs]) => [name, text, h("input", { id: `${id}-${name}`, name, ...attrs })]);
  const status = h("div", { "aria-live": "assertive" });
  const dialog = h(
    "dialog",
    { "aria-labelledby": `${id}-title` },
    h(
      "form",
      { method: "dialog" },
      h("h2", { id: `${id}-title` }, heading),
      inputs.map(([name, text, input]) => h("label", { for: `${id}-${name}` }, text, input)),
      h("label", { for: `${id}-reason` }, "Reason (recorded in the ledger)", reason),
      status,
      h(
        "div",
        { class: "buttons" },
        h("button", { type: "submit", value: "confirm", class: "primary" }, label.replace("…", "")),
        h("button", { type: "button", onclick: () => dialog.close() }, "Cancel"),
      ),
    ),
  );
  const form = dialog.querySelector("form");
  form.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    const values = Object.fromEntries(inputs.map(([name, , input]) => [name, input.value.trim()]));
    try {
      const result = await run(reason.value.trim(), values);
      dialog.close();
      const where = event(result, values);
      const events = await api("/history", { params: { subject: where.subject } });
      setNotice(ledgerEvent(events[events.length - 1]));
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      dialog.close();
      setNotice(explain(err));
    }
    await rerender();
  });
  const button = h("button", { type: "button", class: "action", onclick: () => dialog.showModal() }, label);
  return h("span", { class: "action-wrap" }, button, dialog);
}

function ledgerEvent(event) {
  return h(
    "div",
    { class: "notice", role: "status", id: "ledger-event" },
    h("strong", null, "Done. The ledger recorded:"),
    kv(
      [
        ["Event", `#${event.seq} ${event.action}`],
        ["Subject", uriLink(event.subject)],
        ["Actor", event.actor],
        ["Time", time(event.time)],
        ["Reason", event.reason ?? "—"],
      ],
      "ledger event",
    ),
  );
}

function versionActions(mv, me, rerender, setNotice) {
  const model = mv.model;
  const base = `/models/${seg(model)}/versions/${mv.version}`;
  const subject = { subject: mv.uri };
  const post = (verb, body) => api(`${base}/${verb}`, { method: "POST", body });
  const buttons = [];
  const stage = mv.stage;
  if (hasRole(me, "approver", model) && stage === "validated") {
    buttons.push(
      actionButton({
        label: "Approve…",
        heading: `Approve ${mv.uri}`,
        run: (reason) => post("approve", { reason }),
        event: () => subject,
        rerender,
        setNotice,
      }),
      actionButton({
        label: "Reject…",
        heading: `Reject ${mv.uri}`,
        run: (reason) => post("reject", { reason }),
        event: () => subject,
        rerender,
        setNotice,
      }),
    );
  }
  if (hasRole(me, "deployer", model) && (stage === "approved" || stage === "deployed")) {
    buttons.push(
      actionButton({
        label: "Deploy…",
        heading: `Deploy ${mv.uri}`,
        fields: [["alias", "Alias", { value: "production", required: true }]],
        run: (reason, fields) => post("deploy", { alias: fields.alias, reason }),
        event: () => subject,
        rerender,
        setNotice,
      }),
    );
  }
  if (hasRole(me, "contributor", model)) {
    buttons.push(
      actionButton({
        label: "Set alias…",
        heading: `Point an alias at ${mv.uri}`,
        fields: [["alias", "Alias", { required: true, placeholder: "champion" }]],
        run: (reason, fields) =>
          api(`/models/${seg(model)}/aliases/${seg(fields.alias)}`, {
            method: "PUT",
            body: { version: mv.version, reason },
          }),
        event: (_r, fields) => ({ subject: `models:/${model}@${fields.alias}` }),
        rerender,
        setNotice,
      }),
    );
    if (stage !== "retired") {
      buttons.push(
        actionButton({
          label: "Retire…",
          heading: `Retire ${mv.uri}`,
          run: (reason) => post("retire", { reason }),
          event: () => subject,
          rerender,
          setNotice,
        }),
      );
    }
  }
  return buttons.length ? h("div", { class: "actions", id: "actions", role: "group", "aria-label": "Actions" }, buttons) : null;
}

// ---------------------------------------------------------------------------- a version

export async function version({ view, params: [name, ref], me, rerender, setNotice }) {
  const base = `/models/${seg(name)}/versions/${seg(ref)}`;
  const mv = await api(base);
  const [state, history] = await Promise.all([
    api(`/models/${seg(mv.model)}/versions/${mv.version}/state`),
    api(`/models/${seg(mv.model)}/versions/${mv.version}/history`),
  ]);
  const m = mv.manifest;
  const src = m.source ?? {};
  const dirty =
    src.dirty === true
      ? h("span", { class: "badge dirty" }, "dirty: uncommitted changes")
      : src.dirty === false
        ? h("span", { class: "badge clean" }, "clean")
        : h("span", { class: "muted" }, "unknown");
  const repo =
    src.repo_url && /^https?:\/\//.test(src.repo_url)
      ? h("a", { href: src.repo_url, rel: "noopener noreferrer" }, src.repo_url)
      : show(src.repo_url);
  append(view, 
    h("p", { class: "crumbs" }, link(["models", mv.model], mv.model), " / ", `v${mv.version}`),
    title(mv.uri, " ", badge(mv.stage)),
    mv.aliases.length ? h("p", null, mv.aliases.map((a) => h("span", { class: "alias" }, `@${a}`))) : null,
    versionActions(mv, me, rerender, setNotice),
    h(
      "p",
      { class: "links" },
      link(["models", mv.model, "versions", mv.version, "lineage"], "Lineage graph"),
      mv.version > 1
        ? link(["diff"], `Compare with v${mv.version - 1}`, { a: `models:/${mv.model}/${mv.version - 1}`, b: mv.uri })
        : null,
    ),
    section(
      "Summary",
      kv(
        [
          ["Registered by", mv.created_by],
          ["Registered at", time(mv.created_at)],
          ["Stage", badge(state.stage)],
          ["Approved by", state.approved_by ?? "—"],
          ["Decided at", time(state.decided_at)],
          ["Algorithm", show(m.algorithm)],
          ["Framework", `${m.framework ?? "—"} ${m.framework_version ?? ""}`],
          ["Python", show(m.python)],
          ["Flavor", mv.flavor],
          ["Digest", h("code", null, mv.digest)],
          ["Tags", tags(mv.tags)],
        ],
        "summary",
      ),
    ),
    section(
      "Code",
      kv(
        [
          ["Repository", repo],
          ["Path", show(src.path)],
          ["Revision", src.revision ? h("code", { id: "revision" }, src.revision) : show(null)],
          ["Branch", show(src.branch)],
          ["Working tree", dirty],
        ],
        "code",
      ),
    ),
    section("Training job", kv(m.training_job ?? {}, "training job fields")),
    section("Parameters", kv(m.params ?? {}, "parameters")),
    section("Metrics", kv(m.metrics ?? {}, "metrics")),
    section(
      "Data sets",
      (m.datasets ?? []).length
        ? table(
            [
              ["Role", (d) => d.role],
              ["Data set", (d) => uriLink(d.uri)],
              ["Rows", (d) => (d.rows ?? "—").toLocaleString("en")],
              ["Digest", (d) => h("code", null, d.digest)],
            ],
            m.datasets,
            { id: "datasets" },
          )
        : h("p", { class: "muted" }, "No data set recorded."),
    ),
    section("Processing steps", steps(m.steps ?? [])),
    section("Signature", signature(m.signature)),
    section(
      "Files",
      table(
        [
          ["Path", (f) => h("code", null, f.path)],
          ["Size", (f) => h("span", { title: `${f.size} bytes` }, bytes(f.size))],
          ["sha256", (f) => h("code", null, f.sha256)],
        ],
        mv.files,
        { id: "files" },
      ),
    ),
    section(
      "Dependencies",
      h(
        "details",
        null,
        h("summary", null, `${Object.keys(m.dependencies ?? {}).length} packages pinned`),
        kv(m.dependencies ?? {}, "dependencies"),
      ),
    ),
    section("Stage timeline", timeline(history)),
  );
}

function steps(list) {
  if (!list.length) return h("p", { class: "muted" }, "No processing step recorded.");
  return table(
    [
      ["Step", (s) => s.name],
      ["Kind", (s) => s.kind],
      ["Inputs", (s) => (s.inputs ?? []).map((i) => h("div", null, typeof i === "string" ? uriLink(i) : uriLink(i.uri)))],
      ["Columns", (s) => (s.columns ?? []).join(", ") || "—"],
      ["Parameters", (s) => h("details", null, h("summary", null, `${Object.keys(s.params ?? {}).length}`), kv(s.params ?? {}, "step parameters"))],
    ],
    list,
    { class: "steps" },
  );
}

function signature(sig) {
  if (!sig) return h("p", { class: "muted" }, "No signature recorded.");
  const cols = (list) =>
    table(
      [
        ["Column", (c) => c.name],
        ["Type", (c) => c.type],
        ["Nullable", (c) => (c.nullable ? "yes" : "no")],
      ],
      list ?? [],
    );
  return h("div", { class: "two" }, h("div", null, h("h3", null, "Inputs"), cols(sig.inputs)), h("div", null, h("h3", null, "Outputs"), cols(sig.outputs)));
}

function timeline(events) {
  return h(
    "ol",
    { class: "timeline", id: "timeline" },
    events.map((e) =>
      h(
        "li",
        { dataset: { action: e.action } },
        h("div", { class: "when" }, time(e.time)),
        h(
          "div",
          null,
          h("strong", null, e.action),
          e.data?.stage ? [" → ", badge(e.data.stage)] : null,
          e.data?.alias ? h("span", { class: "alias" }, ` @${e.data.alias}`) : null,
          h("div", null, "by ", h("span", { class: "actor" }, e.actor), e.reason ? [": ", h("q", null, e.reason)] : null),
        ),
      ),
    ),
  );
}

// ---------------------------------------------------------------------------- lineage

async function lineagePage(view, graph, heading, crumbs, anchorRight) {
  const legend = h(
    "ul",
    { class: "legend", "aria-label": "Legend" },
    ["source", "dataset", "step", "model", "deployment"].map((kind) => h("li", { class: `kind-${kind}` }, kind)),
  );
  const container = h("div", { id: "graph", class: "graph", role: "img", "aria-label": `Lineage graph of ${graph.root}` });
  const selected = h("div", { id: "selected", "aria-live": "polite" });
  const controls = h("div", { class: "buttons" });
  append(view, 
    crumbs,
    title(heading),
    h("p", { class: "muted" }, "Drag to pan, scroll to zoom, click a node to open it. The same graph as a list follows."),
    controls,
    legend,
    container,
    selected,
    section(
      "As a list",
      h(
        "details",
        { open: graph.nodes.length <= 20 },
        h("summary", null, `${graph.nodes.length} nodes and ${graph.edges.length} edges`),
        h("h3", null, "Nodes"),
        table(
          [
            ["Kind", (n) => n.kind],
            ["Node", (n) => (parseUri(n.id) ? uriLink(n.id, n.label) : n.label)],
          ],
          graph.nodes,
          { id: "lineage-nodes" },
        ),
        h("h3", null, "Edges"),
        table(
          [
            ["From", (e) => e.from],
            ["To", (e) => e.to],
            ["Relation", (e) => e.label],
          ],
          graph.edges,
          { id: "lineage-edges" },
        ),
      ),
    ),
  );
  return async () => {
    const { renderGraph, toSvg } = await import("./graph.js");
    const cy = renderGraph(container, graph, {
      onTap: (id, kind) => {
        const ref = parseUri(id);
        if (ref && (kind === "model" || kind === "dataset")) {
          location.hash = ref.kind === "model" ? href(["models", ref.name, "versions", ref.version]) : href(["datasets", ref.name, "versions", ref.version]);
          return;
        }
        const node = graph.nodes.find((n) => n.id === id);
        if (kind === "deployment" && node) {
          location.hash = href(["models", node.data.model]);
          return;
        }
        selected.replaceChildren(h("h2", null, node.label), kv(node.data, "node details"));
      },
    });
    cy.fit(undefined, 20);
    if (cy.zoom() < 0.7) {
      // a long chain fitted into the box would be too small to read: start readable, showing
      // a version's end of the chain (it and its deployments), or a data set in the middle
      cy.zoom(0.7);
      const root = cy.getElementById(graph.root);
      if (anchorRight) cy.pan({ x: cy.width() - 20 - cy.elements().boundingBox().x2 * 0.7, y: cy.height() / 2 - root.position().y * 0.7 });
      else cy.center(root);
    }
    window.modelledgerGraph = cy; // for whoever inspects the page (and the tests)
    controls.append(
      h("button", { type: "button", onclick: () => cy.fit(undefined, 20) }, "Fit"),
      h("button", { type: "button", onclick: () => cy.zoom({ level: cy.zoom() * 1.25, renderedPosition: center(cy) }) }, "Zoom in"),
      h("button", { type: "button", onclick: () => cy.zoom({ level: cy.zoom() / 1.25, renderedPosition: center(cy) }) }, "Zoom out"),
      h(
        "button",
        {
          type: "button",
          id: "export-svg",
          onclick: () => {
            const blob = new Blob([toSvg(cy)], { type: "image/svg+xml" });
            const a = h("a", { href: URL.createObjectURL(blob), download: `lineage-${graph.root.replace(/[^A-Za-z0-9.-]+/g, "_")}.svg` });
            document.body.append(a);
            a.click();
            a.remove();
            setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
          },
        },
        "Export SVG",
      ),
    );
  };
}

const center = (cy) => ({ x: cy.width() / 2, y: cy.height() / 2 });

// The aliases that hold the graph's model versions, as deployment nodes after them.
async function withDeployments(graph) {
  const models = [...new Set(graph.nodes.filter((n) => n.kind === "model").map((n) => parseUri(n.id)?.name).filter(Boolean))];
  const nodes = [...graph.nodes];
  const edges = [...graph.edges];
  const found = await Promise.all(models.slice(0, 20).map((name) => api(`/models/${seg(name)}/aliases`).catch(() => null)));
  for (const answer of found) {
    for (const alias of answer?.aliases ?? []) {
      if (!graph.nodes.some((n) => n.id === alias.version_uri)) continue;
      const id = `alias:${answer.model}@${alias.alias}`;
      nodes.push({ id, kind: "deployment", label: `@${alias.alias}`, data: { model: answer.model, ...alias } });
      edges.push({ from: alias.version_uri, to: id, label: alias.alias === "production" ? "deployed" : "alias" });
    }
  }
  return { ...graph, nodes, edges };
}

export async function versionLineage({ view, params: [name, ref] }) {
  const mv = await api(`/models/${seg(name)}/versions/${seg(ref)}`);
  const graph = await withDeployments(await api(`/models/${seg(mv.model)}/versions/${mv.version}/lineage`));
  const crumbs = h("p", { class: "crumbs" }, link(["models", mv.model], mv.model), " / ", link(["models", mv.model, "versions", mv.version], `v${mv.version}`), " / lineage");
  return lineagePage(view, graph, `Lineage of ${mv.uri}`, crumbs, true);
}

export async function datasetLineage({ view, params: [name, ref] }) {
  const dv = await api(`/datasets/${seg(name)}/versions/${seg(ref)}`);
  const graph = await withDeployments(await api(`/datasets/${seg(dv.name)}/versions/${dv.version}/lineage`));
  const crumbs = h("p", { class: "crumbs" }, link(["datasets"], "Data sets"), " / ", link(["datasets", dv.name, "versions", dv.version], `${dv.name} v${dv.version}`), " / lineage");
  return lineagePage(view, graph, `Lineage of ${dv.uri}`, crumbs, false);
}

// ---------------------------------------------------------------------------- diff

export async function diff({ view, query }) {
  const a = query.get("a");
  const b = query.get("b");
  append(view, 
    title("Compare two versions"),
    filterForm(
      ["diff"],
      [
        ["a", "Version", { placeholder: "models:/credit-risk/1", required: true }],
        ["b", "against", { placeholder: "models:/credit-risk/2", required: true }],
      ],
      query,
      "Compare",
    ),
  );
  if (!a || !b) return;
  const d = await api("/diff", { params: { a, b } });
  const changes = (label, map) =>
    section(
      label,
      Object.keys(map).length
        ? table(
            [
              ["Name", ([k]) => k],
              [uriText(d.a), ([, c]) => h("del", { class: "old" }, show(c.old))],
              [uriText(d.b), ([, c]) => h("ins", { class: "new" }, show(c.new))],
            ],
            Object.entries(map),
            { class: "changes", dataset: { section: label.toLowerCase() } },
          )
        : h("p", { class: "muted same" }, "No change."),
    );
  append(view, 
    h("p", null, uriLink(d.a), " → ", uriLink(d.b)),
    changes("Parameters", d.params),
    changes("Metrics", d.metrics),
    changes("Code", d.code),
    changes("Framework", d.framework),
    changes("Dependencies", d.dependencies),
    section(
      "Data",
      d.datasets.length
        ? table(
            Object.keys(d.datasets[0]).map((key) => [key, (row) => (typeof row[key] === "string" && parseUri(row[key]) ? uriLink(row[key]) : show(row[key]))]),
            d.datasets,
            { class: "changes" },
          )
        : h("p", { class: "muted same" }, "No change."),
    ),
  );
}

const uriText = (uri) => uri.replace(/^models:\//, "");

// ---------------------------------------------------------------------------- data sets

export async function datasets({ view, query }) {
  const page = await api("/datasets", { params: { prefix: query.get("prefix"), limit: PAGE, cursor: query.get("cursor") } });
  append(view, 
    title("Data sets"),
    filterForm(["datasets"], [["prefix", "Name starts with", { type: "search" }]], query),
    table(
      [
        ["Data set", (d) => link(["datasets", d.name, "versions", d.latest_version], d.name)],
        ["Description", (d) => d.description || "—"],
        ["Latest version", (d) => `v${d.latest_version}`],
        ["Created", (d) => time(d.created_at)],
      ],
      page.items,
      { id: "dataset-list" },
    ),
    pager(["datasets"], query, page.next_cursor),
  );
}

export async function dataset({ view, params: [name, ref], query }) {
  const base = `/datasets/${seg(name)}/versions/${seg(ref)}`;
  const offset = Number(query.get("offset") ?? 0) || 0;
  const [dv, rows, usage] = await Promise.all([api(base), api(`${base}/rows`, { params: { limit: 20, offset } }), api(`${base}/usage`)]);
  const src = dv.source;
  append(view, 
    h("p", { class: "crumbs" }, link(["datasets"], "Data sets"), " / ", dv.name, " / ", `v${dv.version}`),
    title(dv.uri),
    h("p", { class: "links" }, link(["datasets", dv.name, "versions", dv.version, "lineage"], "Lineage graph (upstream and downstream)")),
    section(
      "Summary",
      kv(
        [
          ["Rows", dv.row_count.toLocaleString("en")],
          ["Size", h("span", { title: `${dv.size_bytes} bytes` }, bytes(dv.size_bytes))],
          ["Digest", h("code", null, dv.digest)],
          ["File sha256", h("code", null, dv.file_sha256)],
          ["Registered by", dv.created_by],
          ["Registered at", time(dv.created_at)],
        ],
        "summary",
      ),
    ),
    section(
      "Schema and statistics",
      table(
        [
          ["Column", (c) => c.name],
          ["Type", (c) => c.type],
          ["Nullable", (c) => (c.nullable ? "yes" : "no")],
          ["Nulls", (c) => show(dv.stats[c.name]?.nulls)],
          ["Min", (c) => show(dv.stats[c.name]?.min)],
          ["Max", (c) => show(dv.stats[c.name]?.max)],
          ["Distinct", (c) => show(dv.stats[c.name]?.distinct)],
        ],
        dv.schema,
        { id: "schema" },
      ),
    ),
    section(
      "Source",
      kv(
        [
          ["Kind", src.kind],
          ["URI", show(src.uri)],
          ["Query", src.query ? h("code", null, src.query) : show(null)],
          ["Extracted at", time(src.extracted_at)],
          ["Code", show(Object.keys(src.code ?? {}).length ? src.code : null)],
        ],
        "source",
      ),
    ),
    section("Processing steps", steps(dv.steps)),
    section(
      `Preview (rows ${offset + 1}–${offset + rows.rows.length} of ${rows.total_rows.toLocaleString("en")})`,
      table(
        rows.columns.map((c) => [h("span", { title: c.arrow_type }, c.name), (row) => show(row[c.name])]),
        rows.rows,
        { id: "preview", class: "compact" },
      ),
      h(
        "nav",
        { class: "pager", "aria-label": "Rows" },
        offset > 0 ? link(["datasets", dv.name, "versions", dv.version], "Previous rows", { offset: Math.max(0, offset - 20) }) : null,
        offset + 20 < rows.total_rows ? link(["datasets", dv.name, "versions", dv.version], "Next rows", { offset: offset + 20 }) : null,
      ),
    ),
    section(
      "Used by",
      usage.used_by.length
        ? table(
            [
              ["Model version", (u) => uriLink(u.uri)],
              ["Role", (u) => u.role],
            ],
            usage.used_by,
            { id: "used-by" },
          )
        : h("p", { class: "muted" }, "No model version used this version directly."),
      usage.through_derived.length
        ? [h("h3", null, "Through data sets made from it"), h("ul", { id: "through-derived" }, usage.through_derived.map((u) => h("li", null, uriLink(u))))]
        : null,
    ),
  );
}

// ---------------------------------------------------------------------------- audit

export async function audit({ view, query, me }) {
  append(view, 
    title("Audit log"),
    filterForm(
      ["audit"],
      [
        ["actor", "Actor", { placeholder: "risk-officer@bank.example" }],
        ["action", "Action", { placeholder: "version.approved or version.*" }],
        ["model", "Model", { placeholder: unscoped(me) ? "all models" : "required: your roles are scoped" }],
        ["since", "Since (RFC 3339)", { placeholder: "2026-01-01T00:00:00Z" }],
        ["until", "Until (RFC 3339)", {}],
      ],
      query,
      "Filter",
    ),
  );
  if (!unscoped(me) && !query.get("model")) {
    append(view, h("p", { class: "muted" }, `Your roles cover ${me.models.join(", ")} only: name a model to see its events.`));
    return;
  }
  const page = await api("/audit", {
    params: {
      actor: query.get("actor"),
      action: query.get("action"),
      model: query.get("model"),
      since: query.get("since"),
      until: query.get("until"),
      limit: 50,
      cursor: query.get("cursor"),
    },
  });
  append(view, 
    page.items.length
      ? table(
          [
            ["#", (e) => e.seq],
            ["Time", (e) => time(e.time)],
            ["Actor", (e) => e.actor],
            ["Action", (e) => e.action],
            ["Subject", (e) => (parseUri(e.subject) ? uriLink(e.subject) : h("code", null, e.subject))],
            ["Reason", (e) => e.reason ?? "—"],
          ],
          page.items,
          { id: "audit" },
        )
      : h("p", { class: "muted" }, "No event matches."),
    pager(["audit"], query, page.next_cursor),
  );
}

// ---------------------------------------------------------------------------- trace

export async function trace({ view, query }) {
  const id = query.get("id");
  append(view,
    title("Trace a prediction"),
    filterForm(["trace"], [["id", "Prediction id", { required: true, size: 30 }]], query, "Trace"),
    receiptDrop(),
  );
  if (!id) return;
  const t = await api(`/predictions/${seg(id)}/trace`);
  append(view, ...traceReport(t));
}

export async function receipt({ view }) {
  append(view,
    title("Verify a receipt"),
    h("p", null, "A receipt is the signed record a serving process gives for each decision. The server checks it against the registry's enrolled serving keys: genuine, signed by a key enrolled to serve its model and not revoked at its time, and every field as it was signed."),
    receiptDrop(),
  );
}

// Choose or drop a receipt file: the server answers whether it is valid (POST /receipts/verify).
function receiptDrop() {
  const input = h("input", { id: "receipt-file", type: "file", accept: "application/json,.json" });
  const result = h("div", { "aria-live": "polite", id: "receipt-result" });
  const drop = h(
    "div",
    { class: "drop" },
    h("label", { for: "receipt-file" }, "Verify a receipt file (JSON): choose it or drop it here"),
    input,
    result,
  );
  const check = async (file) => {
    result.replaceChildren(h("p", { class: "muted" }, `Checking ${file.name}…`));
    result.replaceChildren(await checkReceipt(file));
  };
  input.addEventListener("change", () => input.files[0] && check(input.files[0]));
  drop.addEventListener("dragover", (event) => event.preventDefault());
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer.files[0]) check(event.dataTransfer.files[0]);
  });
  return drop;
}

function traceReport(t) {
  const p = t.prediction;
  const g = t.governance;
  const src = t.manifest.source ?? {};
  return [
    h(
      "div",
      { class: t.receipt.valid ? "notice" : "error", id: "receipt-validity", role: "status" },
      h("strong", null, t.receipt.valid ? "The receipt is valid" : "The receipt is NOT valid"),
      t.receipt.problem ? h("p", null, t.receipt.problem) : h("p", null, "The registry checked this prediction's receipt and found no problem."),
    ),
    section(
      "Prediction",
      kv(
        [
          ["Id", h("code", null, p.id)],
          ["Time", time(p.time)],
          ["Input", show(p.input)],
          ["Output", show(p.output)],
          ["Input digest", h("code", null, p.input_digest)],
        ],
        "prediction",
      ),
    ),
    section(
      "Model",
      kv(
        [
          ["Version", uriLink(t.model.uri)],
          ["Registered by", t.model.registered_by],
          ["Registered at", time(t.model.registered_at)],
          ["Digest", h("code", null, t.model.digest)],
          ["Algorithm", show(t.manifest.algorithm)],
        ],
        "model",
      ),
    ),
    section(
      "Governance",
      kv(
        [
          ["Stage", badge(g.stage)],
          ["Approved by", h("span", { id: "approved-by" }, g.approved_by ?? "nobody")],
          ["Approvals", (g.approvals ?? []).map((a) => h("div", null, `${a.actor} at ${a.time}${a.reason ? `: ${a.reason}` : ""}`))],
          ["Deployments", (g.deployments ?? []).map((d) => h("div", null, `@${d.alias} by ${d.actor} at ${d.time}${d.reason ? `: ${d.reason}` : ""}`))],
          ["Aliases when predicted", (g.aliases_at_prediction ?? []).map((a) => `@${a}`).join(", ") || "—"],
        ],
        "governance",
      ),
    ),
    section(
      "Code",
      kv(
        [
          ["Repository", show(src.repo_url)],
          ["Path", show(src.path)],
          ["Revision", src.revision ? h("code", { id: "trace-revision" }, src.revision) : show(null)],
          ["Working tree", src.dirty === true ? "dirty: uncommitted changes" : src.dirty === false ? "clean" : "unknown"],
        ],
        "code",
      ),
    ),
    section(
      "Data sets",
      table(
        [
          ["Role", (d) => d.role ?? "—"],
          ["Data set", (d) => uriLink(d.uri)],
          ["Rows", (d) => show(d.rows)],
          ["Source", (d) => `${d.source?.kind ?? ""} ${d.source?.uri ?? d.source?.query ?? ""}`.trim()],
          ["Made by", (d) => (d.steps ?? []).map((s) => h("div", null, `${s.name} (${s.kind}) from `, (s.inputs ?? []).map((i) => uriLink(i.uri ?? i))))],
        ],
        t.datasets,
        { id: "trace-datasets" },
      ),
    ),
    section("Model's processing steps", steps(t.model_steps)),
    section("Every event about the version", timeline(g.events ?? [])),
  ];
}

// A receipt file checked by the server against the registry's trust bundle.
async function checkReceipt(file) {
  let receipt;
  try {
    receipt = JSON.parse(await file.text());
  } catch (err) {
    return explain(new ApiError(400, "InvalidInput", `${file.name} is not JSON: ${err.message}`));
  }
  if (receipt === null || typeof receipt !== "object" || Array.isArray(receipt)) {
    return explain(new ApiError(400, "InvalidInput", `${file.name} does not hold a receipt (a JSON object)`));
  }
  try {
    const r = await api("/receipts/verify", { method: "POST", body: receipt });
    return h(
      "div",
      { class: r.valid ? "notice" : "error", role: "status", dataset: { valid: String(r.valid) } },
      h("strong", null, r.valid ? `${file.name}: the receipt is valid` : `${file.name}: the receipt is NOT valid`),
      r.problem ? h("p", null, r.problem) : null,
      kv(
        [
          ["Prediction", h("code", null, show(r.prediction_id))],
          ["Model", r.model && r.version ? uriLink(`models:/${r.model}/${r.version}`) : show(r.model)],
          ["Output", show(r.output)],
          ["Time", show(r.time)],
          ["Signed by", r.signed_by ? `${r.signed_by} (key ${r.key_id})` : `key ${r.key_id ?? "—"}, enrolled to no member`],
        ],
        "receipt",
      ),
      r.captured ? h("p", null, link(["trace"], "See the registry's trace of this prediction", { id: r.prediction_id })) : null,
    );
  } catch (err) {
    return explain(err);
  }
}

// ---------------------------------------------------------------------------- production at T

export async function productionAt({ view, query }) {
  const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  append(view, 
    title("What was in production at a time"),
    filterForm(
      ["at"],
      [
        ["model", "Model", { required: true }],
        ["alias", "Alias", { placeholder: "production" }],
        ["time", "Time (RFC 3339, UTC)", { placeholder: now, required: true }],
      ],
      query,
      "Look up",
    ),
  );
  const model = query.get("model");
  const at = query.get("time");
  if (!model || !at) return;
  const alias = query.get("alias") || "production";
  const answer = await api(`/models/${seg(model)}/aliases/${seg(alias)}/at`, { params: { time: at } });
  append(view, 
    h(
      "p",
      { id: "alias-at", class: "answer" },
      answer.version === null
        ? `No version held @${alias} of ${model} at ${answer.time}.`
        : [`@${alias} of ${model} held `, link(["models", model, "versions", answer.version], `version ${answer.version}`), ` at ${answer.time}.`],
    ),
  );
}


