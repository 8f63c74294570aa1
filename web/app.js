// The dashboard's shell: hash routing between the pages, the health
// indicator and the "lsqd unreachable" banner.
import { api, onReachability } from './api.js';
import * as jobs from './jobs.js';
import * as submit from './submit.js';
import * as job from './job.js';
import * as compare from './compare.js';
import * as tryit from './try.js';
import * as datasets from './datasets.js';

const ROUTES = [
  [/^#\/jobs\/(\d+)$/, job, 'jobs'],
  [/^#\/(?:jobs)?$/, jobs, 'jobs'],
  [/^#\/submit(?:\?dataset=(\d+))?$/, submit, 'submit'],
  [/^#\/datasets(?:\/(\d+))?$/, datasets, 'datasets'],
  [/^#\/compare$/, compare, 'compare'],
  [/^#\/try(?:\/(\d+))?$/, tryit, 'try'],
];

let cleanup = null;

function route() {
  const hash = location.hash || '#/jobs';
  const main = document.getElementById('main');
  if (cleanup) { try { cleanup(); } catch (e) { console.error(e); } cleanup = null; }
  let found = null;
  for (const [re, page, nav] of ROUTES) {
    const m = hash.match(re);
    if (m) { found = { page, nav, args: m.slice(1) }; break; }
  }
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (found && a.dataset.nav === found.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.replaceChildren();
  if (!found) {
    const p = document.createElement('p');
    p.className = 'error';
    p.textContent = `No page ${hash}. `;
    const a = document.createElement('a');
    a.href = '#/jobs';
    a.textContent = 'Back to the jobs';
    p.append(a);
    main.append(p);
    return;
  }
  cleanup = found.page.render(main, ...found.args) || null;
  if (document.activeElement && document.activeElement !== document.body && !main.contains(document.activeElement)) {
    main.focus({ preventScroll: true });
  }
}

const health = document.getElementById('health');
const banner = document.getElementById('banner');
function setReachable(ok, err) {
  if (ok) {
    banner.hidden = true;
    health.className = 'health ok';
    health.textContent = 'lsqd online';
  } else {
    banner.hidden = false;
    banner.textContent = `Cannot reach lsqd at ${location.origin}: ${err ? err.message : 'no answer'}. Retrying every few seconds; the page updates when it answers.`;
    health.className = 'health down';
    health.textContent = 'lsqd unreachable';
  }
}
onReachability(setReachable);

async function pollHealth() {
  try {
    const h = await api.health();
    health.textContent = `lsqd online · ${h.busy}/${h.workers} workers busy`;
  } catch (e) {
    if (e.code !== 'unreachable') {
      health.className = 'health down';
      health.textContent = `lsqd: ${e.message}`;
    }
  }
}

window.addEventListener('hashchange', route);
route();
pollHealth();
setInterval(pollHealth, 5000);
