// A small SVG chart: lines and/or dots for a few series, linear or log axes,
// nice ticks, vertical markers and an HTML legend. No dependencies.
//   const c = new Chart({title, xLabel, yLabel, logX, logY, yMin, yMax});
//   parent.append(c.node); c.setSeries([{name, color, points: [[x, y, tip]], line, dots}]);

const NS = 'http://www.w3.org/2000/svg';
const W = 640, H = 280, M = { l: 62, r: 34, t: 14, b: 46 };
export const PALETTE = ['#2563eb', '#dc2626', '#059669', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563', '#65a30d', '#9333ea'];

function svg(tag, attrs, text) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  const start = Math.floor(lo / step) * step, end = Math.ceil(hi / step) * step;
  const ticks = [];
  for (let v = start; v <= end + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function logTicks(lo, hi) {
  const ticks = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * Math.pow(10, e);
      if (v >= lo / 1.0001 && v <= hi * 1.0001) ticks.push(v);
    }
  }
  return ticks.length >= 2 ? ticks : [lo, hi];
}

// Labels with as many decimals as the tick step needs (0.0498, 0.0499, ...).
function stepFormat(ticks) {
  const vs = ticks.map((t) => (typeof t === 'object' ? t.v : t));
  const step = vs.length > 1 ? Math.abs(vs[1] - vs[0]) : 0;
  if (!step || step >= 1 || step < 1e-6) return fmtTick;
  const d = Math.min(8, Math.ceil(-Math.log10(step) - 1e-9) + (step / Math.pow(10, Math.floor(Math.log10(step))) % 1 ? 1 : 0));
  return (v) => Number(v.toFixed(d)).toString();
}

function fmtTick(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(0);
  return Number(v.toPrecision(4)).toString();
}

export class Chart {
  constructor(opts) {
    this.o = Object.assign({ xLabel: '', yLabel: '', markers: [] }, opts);
    this.series = [];
    this.node = document.createElement('figure');
    this.node.className = 'chart';
    if (this.o.id) this.node.id = this.o.id;
    const cap = document.createElement('figcaption');
    cap.textContent = this.o.title || '';
    this.svg = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': this.o.title || 'chart' });
    this.legend = document.createElement('ul');
    this.legend.className = 'legend';
    this.node.append(cap, this.svg, this.legend);
    this.pending = false;
    this.render();
  }

  setSeries(series) { this.series = series; this.schedule(); }
  setMarkers(markers) { this.o.markers = markers; this.schedule(); }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.render(); });
  }

  render() {
    const o = this.o, s = this.svg;
    while (s.firstChild) s.removeChild(s.firstChild);
    const pts = this.series.flatMap((se) => se.points).filter((p) => isFinite(p[0]) && isFinite(p[1]) &&
      (!o.logX || p[0] > 0) && (!o.logY || p[1] > 0));
    this.node.dataset.points = String(pts.length);
    if (!pts.length) {
      s.append(svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'nodata' }, o.empty || 'No data yet'));
      this.legend.replaceChildren();
      this.svg.setAttribute('aria-label', `${o.title}: no data yet`);
      return;
    }
    let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
    let y0 = Math.min(...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
    if (o.xMin !== undefined) x0 = Math.min(x0, o.xMin);
    if (o.xMax !== undefined) x1 = Math.max(x1, o.xMax);
    if (o.yMin !== undefined) y0 = Math.min(y0, o.yMin);
    if (o.yMax !== undefined) y1 = Math.max(y1, o.yMax);
    let xt = o.xTicks ? o.xTicks : o.logX ? logTicks(x0 / 1.2, x1 * 1.2) : niceTicks(x0, x1, 6);
    if (o.xInt && !o.xTicks) {
      const a = Math.floor(x0), b = Math.max(Math.ceil(x1), a + 1), st = Math.max(1, Math.ceil((b - a) / 8));
      xt = [];
      for (let v = a; v <= b; v += st) xt.push(v);
    }
    const yt = o.logY ? logTicks(y0 / 1.2, y1 * 1.2) : niceTicks(y0, y1, 5);
    const xs = xt.map((t) => (typeof t === 'object' ? t.v : t));
    const xa = Math.min(x0, ...xs), xb = Math.max(x1, ...xs);
    const ya = Math.min(y0, ...yt), yb = Math.max(y1, ...yt);
    const tx = (v) => { const f = o.logX ? (Math.log(v) - Math.log(xa)) / (Math.log(xb) - Math.log(xa)) : (v - xa) / (xb - xa || 1); return M.l + f * (W - M.l - M.r); };
    const ty = (v) => { const f = o.logY ? (Math.log(v) - Math.log(ya)) / (Math.log(yb) - Math.log(ya)) : (v - ya) / (yb - ya || 1); return H - M.b - f * (H - M.t - M.b); };

    const yf = o.yFormat || (o.logY ? fmtTick : stepFormat(yt));
    const xf = o.xFormat || (o.logX ? fmtTick : stepFormat(xt));
    const grid = svg('g', { class: 'grid' });
    for (const v of yt) {
      const y = ty(v);
      grid.append(svg('line', { x1: M.l, x2: W - M.r, y1: y, y2: y }));
      grid.append(svg('text', { x: M.l - 6, y: y + 4, 'text-anchor': 'end' }, yf(v)));
    }
    for (const t of xt) {
      const v = typeof t === 'object' ? t.v : t, label = typeof t === 'object' ? t.label : xf(v);
      const x = tx(v);
      grid.append(svg('line', { x1: x, x2: x, y1: M.t, y2: H - M.b, class: 'v' }));
      grid.append(svg('text', { x, y: H - M.b + 16, 'text-anchor': 'middle' }, label));
    }
    s.append(grid);
    s.append(svg('text', { x: (M.l + W - M.r) / 2, y: H - 8, 'text-anchor': 'middle', class: 'axis' }, o.xLabel));
    s.append(svg('text', { x: 14, y: (M.t + H - M.b) / 2, 'text-anchor': 'middle', class: 'axis', transform: `rotate(-90 14 ${(M.t + H - M.b) / 2})` }, o.yLabel));
    for (const mk of o.markers || []) {
      if (!(mk.x >= xa && mk.x <= xb)) continue;
      const x = tx(mk.x);
      s.append(svg('line', { x1: x, x2: x, y1: M.t, y2: H - M.b, class: 'marker' }));
      s.append(svg('text', { x: x + 4, y: M.t + 10, class: 'marker-label' }, mk.label));
    }
    const legendItems = [];
    this.series.forEach((se, i) => {
      const color = se.color || PALETTE[i % PALETTE.length];
      const p = se.points.filter((q) => isFinite(q[0]) && isFinite(q[1]) && (!o.logX || q[0] > 0) && (!o.logY || q[1] > 0));
      if (!p.length) return;
      const g = svg('g', { class: 'series' });
      if (se.line !== false && p.length > 1) {
        const d = p.map((q, k) => `${k ? 'L' : 'M'}${tx(q[0]).toFixed(1)},${ty(q[1]).toFixed(1)}`).join('');
        g.append(svg('path', { d, fill: 'none', stroke: color, 'stroke-width': se.width || 2, 'stroke-dasharray': se.dash || '' }));
      }
      if (se.dots || p.length === 1) {
        for (const q of p) {
          const c = svg('circle', { cx: tx(q[0]), cy: ty(q[1]), r: se.r || 4, fill: color });
          c.append(svg('title', {}, q[2] || `${se.name}: ${fmtTick(q[1])}`));
          g.append(c);
          if (se.labels && q[2]) g.append(svg('text', { x: tx(q[0]) + 6, y: ty(q[1]) - 6, class: 'pt-label' }, q[2]));
        }
      }
      s.append(g);
      const last = p[p.length - 1];
      legendItems.push({ name: se.name, color, last: last[1] });
    });
    this.legend.replaceChildren(...legendItems.map((it) => {
      const li = document.createElement('li');
      const sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = it.color;
      li.append(sw, document.createTextNode(it.name));
      return li;
    }));
    this.svg.setAttribute('aria-label', `${o.title}: ` + legendItems.map((it) => `${it.name} latest ${fmtTick(it.last)}`).join(', '));
  }
}
