// Small DOM and formatting helpers shared by the pages.

// el('div', {class: 'x', onclick: fn}, child, 'text', ...): a new element.
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k in node && typeof v !== 'string') node[k] = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export const STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
export const FINISHED = ['succeeded', 'failed', 'cancelled'];
export const FASHION_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
  'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];

export function stateBadge(state) {
  return el('span', { class: `badge state-${state}`, text: state });
}

export function fmtPct(x, digits = 1) {
  return typeof x === 'number' && isFinite(x) ? (100 * x).toFixed(digits) + '%' : '—';
}

export function fmtNum(x, digits = 3) {
  if (typeof x !== 'number' || !isFinite(x)) return '—';
  if (x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e5)) return x.toExponential(2);
  return Number(x.toPrecision(digits)).toString();
}

export function fmtBytes(n) {
  if (typeof n !== 'number') return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

export function fmtDuration(s) {
  if (typeof s !== 'number' || !isFinite(s) || s < 0) return '—';
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - 60 * m)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtTime(unix) {
  if (typeof unix !== 'number') return '—';
  const d = new Date(unix * 1000);
  return d.toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function jobDuration(job) {
  if (!job.started_at) return null;
  const end = job.finished_at || Date.now() / 1000;
  return end - job.started_at;
}

export function modelLabel(spec) {
  const m = spec && spec.model;
  if (!m) return '—';
  return m.arch || `custom (${(m.layers || []).length} layers)`;
}

// "W4/A4" (and first/last) or "FP32".
export function bitsLabel(spec) {
  const q = spec && spec.quant;
  if (!q) return 'FP32';
  const fl = q.first_last_bits === 'float' ? 'FP' : q.first_last_bits;
  return `W${q.weight_bits}/A${q.act_bits ?? q.weight_bits}` + (fl !== undefined ? ` (first/last ${fl})` : '');
}

// Epochs of each phase, in run order: [['pretrain', 6], ['lsq', 3]].
export function phasesOf(spec) {
  const out = [];
  const pre = spec && spec.pretrain;
  if (spec && spec.quant && pre && pre.epochs > 0) out.push(['pretrain', pre.epochs]);
  out.push([spec && spec.quant ? 'lsq' : 'train', (spec && spec.train && spec.train.epochs) || 0]);
  return out;
}

// Position of (phase, epoch, step/steps) on one axis of epochs over all phases.
export function epochPosition(spec, phase, epoch, frac) {
  let off = 0;
  for (const [p, n] of phasesOf(spec)) {
    if (p === phase || (phase === 'train' && p === 'lsq') || (phase === 'lsq' && p === 'train')) {
      return off + (epoch - 1) + frac;
    }
    off += n;
  }
  return off + (epoch - 1) + frac;
}

export function totalEpochs(spec) {
  return phasesOf(spec).reduce((a, [, n]) => a + n, 0);
}

// Fraction 0..1 of the whole job done, from its latest progress event.
export function jobFraction(job) {
  if (job.state === 'succeeded') return 1;
  const p = job.progress;
  const total = totalEpochs(job.spec);
  if (!p || !total) return 0;
  const frac = p.steps ? p.step / p.steps : 0;
  return Math.max(0, Math.min(1, epochPosition(job.spec, p.phase, p.epoch, frac) / total));
}

export function progressBar(job, label) {
  const f = jobFraction(job);
  const pct = Math.round(100 * f);
  const wrap = el('div', { class: 'progress-wrap' });
  const bar = el('progress', { max: '100', value: String(pct), 'aria-label': label || `Progress of job ${job.id}`, 'data-job': String(job.id) });
  wrap.append(bar, el('span', { class: 'pct', text: job.state === 'queued' ? 'queued' : `${pct}%` }));
  return wrap;
}

// The artifact that stands for "the model" and its size.
export function modelArtifact(arts) {
  if (!arts) return null;
  return arts.find((a) => a.name === 'model.lsqm') || arts.find((a) => a.name === 'model.lsqc') || null;
}

export function emptyState(text, ...extra) {
  return el('div', { class: 'empty', role: 'status' }, el('p', { text }), ...extra);
}

export function errorBox(err, retry) {
  return el('div', { class: 'error', role: 'alert' },
    el('p', { text: err.code === 'unreachable' ? 'lsqd is unreachable. Is it running?' : `Error: ${err.message}` }),
    err.code === 'unreachable' ? el('p', { class: 'muted', text: err.message }) : null,
    retry ? el('button', { type: 'button', onclick: retry, text: 'Retry' }) : null);
}
