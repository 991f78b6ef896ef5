// The lineage graph: the API's JSON graph (plus the aliases that deploy its model versions),
// laid out by dagre through cytoscape (vendored, see ../vendor/README.md), with pan, zoom, a
// click on a node to open its page, and an SVG export built from the laid-out positions.

import cytoscape from "../vendor/cytoscape.esm.min.js";
import cytoscapeDagre from "../vendor/cytoscape-dagre.esm.min.js";
import { parseUri } from "./dom.js";

cytoscape.use(cytoscapeDagre);

export const COLOURS = {
  source: "#6b7280",
  dataset: "#1d4ed8",
  step: "#b45309",
  model: "#047857",
  deployment: "#7c3aed",
};

// A label short enough to read in a box: the graph's labels carry full URIs.
export function shortLabel(node) {
  const ref = parseUri(node.id);
  if (node.kind === "dataset" && ref) {
    const rows = node.data?.rows;
    return `${ref.name} v${ref.version}${rows === undefined ? "" : `\n${rows.toLocaleString("en")} rows`}`;
  }
  if (node.kind === "model" && ref) return `${ref.name} v${ref.version}`;
  if (node.kind === "deployment") return node.label;
  return node.label.length > 60 ? `${node.label.slice(0, 57)}…` : node.label;
}

export function renderGraph(container, graph, { onTap } = {}) {
  const elements = [
    ...graph.nodes.map((n) => ({
      group: "nodes",
      data: { id: n.id, kind: n.kind, label: shortLabel(n), full: n.label, root: n.id === graph.root ? 1 : 0 },
    })),
    ...graph.edges.map((e, i) => ({
      group: "edges",
      data: { id: `e${i}`, source: e.from, target: e.to, label: e.label },
    })),
  ];
  const cy = cytoscape({
    container,
    elements,
    minZoom: 0.1,
    maxZoom: 3,
    style: [
      {
        selector: "node",
        style: {
          shape: "round-rectangle",
          width: 180,
          height: 46,
          "background-color": "#fff",
          "border-width": 2,
          "border-color": (n) => COLOURS[n.data("kind")] ?? "#111",
          label: "data(label)",
          "text-wrap": "wrap",
          "text-max-width": 170,
          "text-valign": "center",
          "font-size": 12,
          color: "#111",
        },
      },
      { selector: "node[kind = 'step']", style: { shape: "cut-rectangle" } },
      { selector: "node[kind = 'source']", style: { shape: "rectangle", "border-style": "dashed" } },
      { selector: "node[kind = 'deployment']", style: { shape: "tag", width: 130 } },
      { selector: "node[root = 1]", style: { "border-width": 4, "font-weight": "bold" } },
      {
        selector: "edge",
        style: {
          width: 1.5,
          "curve-style": "bezier",
          "line-color": "#9ca3af",
          "target-arrow-color": "#9ca3af",
          "target-arrow-shape": "triangle",
          label: "data(label)",
          "font-size": 10,
          color: "#374151",
          "text-background-color": "#fff",
          "text-background-opacity": 1,
          "text-background-padding": 2,
        },
      },
      { selector: ":selected", style: { "border-color": "#dc2626", "line-color": "#dc2626" } },
    ],
    layout: { name: "dagre", rankDir: "LR", nodeSep: 18, rankSep: 70, edgeSep: 10, animate: false },
  });
  if (onTap) cy.on("tap", "node", (event) => onTap(event.target.id(), event.target.data("kind")));
  return cy;
}

const escapeXml = (text) =>
  String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c]);

// The laid-out graph as a standalone SVG document: boxes where cytoscape placed the nodes,
// straight arrows between their borders, each edge's label at its middle.
export function toSvg(cy) {
  const box = cy.elements().boundingBox({ includeLabels: true });
  const pad = 20;
  const width = Math.ceil(box.w + 2 * pad);
  const height = Math.ceil(box.h + 2 * pad);
  const dx = pad - box.x1;
  const dy = pad - box.y1;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#9ca3af"/></marker></defs>`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
  ];
  cy.edges().forEach((edge) => {
    const s = edge.sourceEndpoint();
    const t = edge.targetEndpoint();
    const m = edge.midpoint();
    out.push(
      `<g class="edge" data-from="${escapeXml(edge.data("source"))}" data-to="${escapeXml(edge.data("target"))}">` +
        `<line x1="${(s.x + dx).toFixed(1)}" y1="${(s.y + dy).toFixed(1)}" x2="${(t.x + dx).toFixed(1)}" y2="${(t.y + dy).toFixed(1)}" stroke="#9ca3af" stroke-width="1.5" marker-end="url(#arrow)"/>` +
        `<text x="${(m.x + dx).toFixed(1)}" y="${(m.y + dy).toFixed(1)}" font-size="10" text-anchor="middle" fill="#374151">${escapeXml(edge.data("label"))}</text></g>`,
    );
  });
  cy.nodes().forEach((node) => {
    const p = node.position();
    const w = node.width();
    const h = node.height();
    const lines = String(node.data("label")).split("\n");
    const colour = COLOURS[node.data("kind")] ?? "#111";
    const first = p.y + dy - ((lines.length - 1) * 14) / 2 + 4;
    out.push(
      `<g class="node" data-id="${escapeXml(node.id())}" data-kind="${escapeXml(node.data("kind"))}">` +
        `<title>${escapeXml(node.data("full"))}</title>` +
        `<rect x="${(p.x + dx - w / 2).toFixed(1)}" y="${(p.y + dy - h / 2).toFixed(1)}" width="${w}" height="${h}" rx="6" fill="#fff" stroke="${colour}" stroke-width="${node.data("root") ? 4 : 2}"/>` +
        lines
          .map(
            (line, i) =>
              `<text x="${(p.x + dx).toFixed(1)}" y="${(first + i * 14).toFixed(1)}" font-size="12" text-anchor="middle">${escapeXml(line)}</text>`,
          )
          .join("") +
        `</g>`,
    );
  });
  out.push("</svg>");
  return out.join("\n");
}
