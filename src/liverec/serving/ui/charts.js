// Small inline SVG charts drawn by hand: a sparkline for a live series, grouped bars for metrics by version.
const SVG = "http://www.w3.org/2000/svg";

function svgElement(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

/** A line of the last values (null = no reading) scaled to the largest one; the area under it is tinted. It
 * stretches to its box's width, which holds ``slots`` readings (default: those given, at least 10), the newest
 * at the right. */
export function sparkline(values, { slots = Math.max(values.length, 10), height = 36, color = "#2f6fde" } = {}) {
  const width = 300;
  const svg = svgElement("svg", { width: "100%", height, viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img" });
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length < 2) return svg;
  const top = Math.max(...finite, 1e-9);
  const step = width / Math.max(slots - 1, 1);
  const offset = slots - values.length; // the newest reading at the right edge
  const points = [];
  values.forEach((v, i) => {
    if (Number.isFinite(v)) points.push([(offset + i) * step, height - 2 - (v / top) * (height - 4)]);
  });
  const line = points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join("");
  const first = points[0][0].toFixed(1);
  const last = points[points.length - 1][0].toFixed(1);
  svg.append(svgElement("path", { d: `${line}L${last},${height}L${first},${height}Z`, fill: color, "fill-opacity": 0.12 }));
  svg.append(svgElement("path", { d: line, fill: "none", stroke: color, "stroke-width": 1.6, "vector-effect": "non-scaling-stroke" }));
  return svg;
}

/** Grouped vertical bars: one group per label, one bar per series ({name, color, values}); values may be null. */
export function barChart(labels, series, { width = 640, height = 220 } = {}) {
  const margin = { top: 10, right: 10, bottom: 28, left: 46 };
  const svg = svgElement("svg", { width: "100%", height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const values = series.flatMap((s) => s.values).filter((v) => Number.isFinite(v));
  const top = values.length ? Math.max(...values) * 1.1 || 1 : 1;
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  for (let t = 0; t <= 4; t++) {
    const y = margin.top + plotH - (t / 4) * plotH;
    svg.append(svgElement("line", { x1: margin.left, x2: width - margin.right, y1: y, y2: y, stroke: "#e1e4ea" }));
    const tick = svgElement("text", { x: margin.left - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#6b7383" });
    tick.textContent = ((t / 4) * top).toFixed(3);
    svg.append(tick);
  }
  const groupW = plotW / Math.max(labels.length, 1);
  const barW = Math.min(28, (groupW * 0.7) / Math.max(series.length, 1));
  labels.forEach((label, g) => {
    const x0 = margin.left + g * groupW + (groupW - barW * series.length) / 2;
    series.forEach((s, k) => {
      const v = s.values[g];
      if (!Number.isFinite(v)) return;
      const h = (v / top) * plotH;
      const bar = svgElement("rect", { x: x0 + k * barW, y: margin.top + plotH - h, width: barW - 2, height: h, fill: s.color, rx: 2 });
      const tip = svgElement("title", {});
      tip.textContent = `${label} ${s.name}: ${v.toFixed(4)}`;
      bar.append(tip);
      svg.append(bar);
    });
    const text = svgElement("text", { x: margin.left + g * groupW + groupW / 2, y: height - 8, "text-anchor": "middle", "font-size": 11, fill: "#1d2330" });
    text.textContent = label;
    svg.append(text);
  });
  return svg;
}
