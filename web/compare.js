// Compare: finished jobs side by side. Test accuracy against weight bits
// (the shape of Table 1 of the LSQ paper: one row per network, one column per
// precision) and test accuracy against the size of the model file.
import { api, finishedArtifacts } from './api.js';
import { Chart, PALETTE } from './chart.js';
import { el, fmtPct, fmtBytes, modelLabel, bitsLabel, modelArtifact, emptyState, errorBox } from './ui.js';

const FP_X = 10; // where full precision sits on the bits axis

function group(job) {
  const ds = job.dataset_id ? `dataset #${job.dataset_id}`
    : (job.spec.dataset && job.spec.dataset.cache) ? 'a dataset'
    : (job.spec.dataset && job.spec.dataset.name) || 'fashion-mnist';
  return `${modelLabel(job.spec)} · ${ds}`;
}
const wbits = (job) => (job.spec.quant ? job.spec.quant.weight_bits : null);

export function render(main) {
  const body = el('div', { 'aria-busy': 'true' }, el('p', { class: 'loading', text: 'Loading finished jobs…' }));
  main.append(el('h1', { text: 'Compare' }),
    el('p', { class: 'muted', text: 'Every succeeded job. Bits are the weight bits of the quantized layers (activations use the job\'s activation bits; first and last layers are listed per job below).' }),
    body);
  let stopped = false;
  const load = async () => {
    try {
      const { jobs } = await api.jobs('succeeded', 1000);
      if (stopped) return;
      body.setAttribute('aria-busy', 'false');
      if (!jobs.length) {
        body.replaceChildren(emptyState('No succeeded jobs to compare yet.', el('a', { href: '#/submit', text: 'Submit a job' })));
        return;
      }
      const arts = await Promise.all(jobs.map((j) => finishedArtifacts(j).catch(() => null)));
      if (!stopped) draw(body, jobs, arts);
    } catch (e) {
      if (stopped) return;
      body.setAttribute('aria-busy', 'false');
      body.replaceChildren(errorBox(e, load));
    }
  };
  load();
  return () => { stopped = true; };
}

function draw(body, jobs, arts) {
  const groups = [...new Set(jobs.map(group))].sort();
  const color = (g) => PALETTE[groups.indexOf(g) % PALETTE.length];
  const rows = jobs.map((j, i) => ({ job: j, g: group(j), bits: wbits(j), acc: j.test_acc, model: modelArtifact(arts[i]) }))
    .filter((r) => typeof r.acc === 'number');
  const bitsTicks = [2, 3, 4, 5, 6, 7, 8].map((v) => ({ v, label: String(v) })).concat([{ v: FP_X, label: 'FP32' }]);
  const c1 = new Chart({ id: 'chart-acc-bits', title: 'Test accuracy against weight bits', xLabel: 'weight bits', yLabel: 'test accuracy', xTicks: bitsTicks, yFormat: (v) => `${Math.round(v * 100)}%` });
  c1.setSeries(groups.map((g) => {
    const pts = rows.filter((r) => r.g === g).map((r) => [r.bits ?? FP_X, r.acc, `${r.job.name} #${r.job.id}: ${bitsLabel(r.job.spec)}, ${fmtPct(r.acc, 2)}`]).sort((a, b) => a[0] - b[0]);
    return { name: g, color: color(g), points: pts, dots: true, line: false, r: 5 };
  }));
  const c2 = new Chart({ id: 'chart-acc-size', title: 'Test accuracy against model size', xLabel: 'model file size (bytes, log scale)', yLabel: 'test accuracy', logX: true, xFormat: (v) => fmtBytes(v), yFormat: (v) => `${Math.round(v * 100)}%` });
  c2.setSeries(groups.map((g) => ({
    name: g, color: color(g), dots: true, line: false, r: 5, labels: true,
    points: rows.filter((r) => r.g === g && r.model).map((r) => [r.model.bytes, r.acc, r.bits ? `W${r.bits}` : 'FP32']),
  })));

  // Table 1 shape: best test accuracy per network and precision.
  const cols = [...new Set(rows.map((r) => r.bits ?? FP_X))].sort((a, b) => a - b);
  const best = (g, b) => {
    const rs = rows.filter((r) => r.g === g && (r.bits ?? FP_X) === b);
    return rs.length ? rs.reduce((m, r) => (r.acc > m.acc ? r : m)) : null;
  };
  const t1 = el('table', { id: 'table1' },
    el('caption', { text: 'Best test accuracy by network and weight bits (like Table 1 of the LSQ paper)' }),
    el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Network' }), cols.map((b) => el('th', { scope: 'col', class: 'num', text: b === FP_X ? 'FP32' : `${b}-bit` })))),
    el('tbody', {}, groups.map((g) => el('tr', {}, el('th', { scope: 'row', text: g }),
      cols.map((b) => { const r = best(g, b); return el('td', { class: 'num' }, r ? el('a', { href: `#/jobs/${r.job.id}`, title: `${r.job.name} #${r.job.id}`, text: fmtPct(r.acc, 2) }) : '—'); })))));
  const list = el('table', { id: 'compare-jobs' },
    el('caption', { text: 'Jobs in the charts' }),
    el('thead', {}, el('tr', {}, ['Job', 'Network', 'Bits', 'Test acc.', 'Model file'].map((h) => el('th', { scope: 'col', text: h })))),
    el('tbody', {}, rows.map((r) => el('tr', {},
      el('td', {}, el('a', { href: `#/jobs/${r.job.id}`, text: `${r.job.name} #${r.job.id}` })),
      el('td', { text: r.g }), el('td', { text: bitsLabel(r.job.spec) }),
      el('td', { class: 'num', text: fmtPct(r.acc, 2) }),
      el('td', { class: 'num', text: r.model ? `${r.model.name} ${fmtBytes(r.model.bytes)}` : '—' })))));
  body.replaceChildren(
    el('div', { class: 'charts' }, c1.node, c2.node),
    el('div', { class: 'table-wrap' }, t1),
    el('p', { class: 'muted', text: 'Model size is the packed integer model model.lsqm when the job exported one, else its final checkpoint model.lsqc (32-bit floats).' }),
    el('div', { class: 'table-wrap' }, list));
}
