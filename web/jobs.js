// Jobs: every job in a table that refreshes itself, filtered by state.
import { api, finishedArtifacts } from './api.js';
import { el, STATES, stateBadge, fmtPct, fmtBytes, fmtDuration, fmtTime, jobDuration,
  modelLabel, bitsLabel, progressBar, modelArtifact, emptyState, errorBox } from './ui.js';

let filter = '';

export function render(main) {
  const select = el('select', { id: 'state-filter', name: 'state' },
    el('option', { value: '', text: 'all states' }),
    STATES.map((s) => el('option', { value: s, text: s })));
  select.value = filter;
  const body = el('div', { id: 'jobs-body', 'aria-live': 'polite', 'aria-busy': 'true' },
    el('p', { class: 'loading', text: 'Loading jobs…' }));
  main.append(
    el('div', { class: 'page-head' },
      el('h1', { text: 'Jobs' }),
      el('div', { class: 'tools' },
        el('label', { for: 'state-filter', text: 'Show' }), select,
        el('a', { class: 'button primary', href: '#/submit', text: 'New job' }))),
    body);

  let timer = null, stopped = false, sizes = new Map();
  async function refresh() {
    clearTimeout(timer);
    let next = 3000;
    try {
      const { jobs } = await api.jobs(filter);
      if (stopped) return;
      body.setAttribute('aria-busy', 'false');
      if (!jobs.length) {
        body.replaceChildren(emptyState(filter ? `No ${filter} jobs.` : 'No jobs yet.',
          el('a', { href: '#/submit', text: 'Submit the first job' })));
      } else {
        body.replaceChildren(table(jobs, sizes));
        loadSizes(jobs, sizes, body);
      }
      if (jobs.some((j) => j.state === 'running' || j.state === 'queued')) next = 1000;
    } catch (e) {
      if (stopped) return;
      body.setAttribute('aria-busy', 'false');
      body.replaceChildren(errorBox(e, refresh));
    }
    if (!stopped) timer = setTimeout(refresh, next);
  }
  select.addEventListener('change', () => {
    filter = select.value;
    body.replaceChildren(el('p', { class: 'loading', text: 'Loading jobs…' }));
    refresh();
  });
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

function table(jobs, sizes) {
  const head = ['Name', 'State', 'Progress', 'Model', 'W/A bits', 'Test acc.', 'Model size', 'Duration', 'Created'];
  return el('div', { class: 'table-wrap' },
    el('table', { class: 'jobs', id: 'jobs-table' },
      el('caption', { class: 'sr-only', text: 'Jobs, newest first' }),
      el('thead', {}, el('tr', {}, head.map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, jobs.map((j) => el('tr', { 'data-id': String(j.id), 'data-state': j.state },
        el('td', {}, el('a', { href: `#/jobs/${j.id}`, text: j.name }), el('span', { class: 'muted', text: ` #${j.id}` })),
        el('td', {}, stateBadge(j.state), j.error ? el('div', { class: 'job-error', title: `${j.error.code}: ${j.error.message}`,
          text: `${j.error.code}: ${j.error.message}` }) : null),
        el('td', {}, progressBar(j, `Progress of job ${j.name} #${j.id}`)),
        el('td', { text: modelLabel(j.spec) }),
        el('td', { text: bitsLabel(j.spec) }),
        el('td', { class: 'num', text: fmtPct(j.test_acc ?? (j.last_epoch && j.last_epoch.test_acc)) }),
        el('td', { class: 'num size', 'data-size-for': String(j.id), text: sizes.has(j.id) ? sizeText(sizes.get(j.id)) : '—' }),
        el('td', { class: 'num', text: fmtDuration(jobDuration(j)) }),
        el('td', { text: fmtTime(j.created_at) }))))));
}

function sizeText(a) { return a ? fmtBytes(a.bytes) : '—'; }

function loadSizes(jobs, sizes, body) {
  for (const j of jobs) {
    if (j.state !== 'succeeded' || sizes.has(j.id)) continue;
    finishedArtifacts(j).then((arts) => {
      const a = modelArtifact(arts);
      sizes.set(j.id, a);
      const cell = body.querySelector(`[data-size-for="${j.id}"]`);
      if (cell) { cell.textContent = sizeText(a); if (a) cell.title = a.name; }
    }).catch(() => {});
  }
}
