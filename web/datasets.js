// Datasets: the list (built-in sets, then registered ones with their state),
// registering one by upload (with a progress bar) or by URL, and one
// dataset's page: its summary, a bar chart of the images per class (train
// and test) and samples.png, lsqd's picture of a few images of every class.
import { api, uploadDataset, token, blobUrl } from './api.js';
import { el, fmtBytes, fmtNum, fmtTime, emptyState, errorBox } from './ui.js';

const ACCEPT = '.tar,.tar.gz,.tgz,.zip,.npz';

export function datasetBadge(state) {
  return el('span', { class: `badge ds-${state}`, text: state });
}

function shapeText(s) {
  return s && Array.isArray(s.shape) ? s.shape.join('×') : '—';
}

// The import options of the form, as an object of the given ones.
function readOptions(form) {
  const o = {};
  const size = form.elements['ds-size'].value.trim();
  const ch = form.elements['ds-channels'].value;
  if (size) o.size = size;
  if (ch) o.channels = Number(ch);
  return o;
}

function registerForm(onRegistered) {
  const status = el('p', { id: 'ds-status', class: 'help', 'aria-live': 'polite' });
  const err = el('div', { id: 'ds-error', role: 'alert' });
  const bar = el('progress', { id: 'ds-upload-progress', max: 1, value: 0, hidden: true, 'aria-label': 'Upload progress' });
  const file = el('input', { id: 'ds-file', type: 'file', accept: ACCEPT });
  const url = el('input', { id: 'ds-url', name: 'ds-url', type: 'text', placeholder: 'https://example.org/pets.tar.gz', autocomplete: 'off' });
  const name = el('input', { id: 'ds-name', name: 'ds-name', type: 'text', placeholder: 'default: the URL\'s file name', autocomplete: 'off' });
  const form = el('form', { id: 'ds-form', novalidate: true },
    el('fieldset', {},
      el('legend', { text: 'Register a dataset' }),
      el('div', { class: 'field' }, el('label', { for: 'ds-file', text: 'Upload an archive' }), file,
        el('small', { class: 'help', text: 'A folder of images per class, CIFAR batches or IDX files as .tar, .tar.gz, .tgz or .zip; or a .npz' })),
      el('div', { class: 'field' }, el('label', { for: 'ds-url', text: 'Or its URL' }), url,
        el('small', { class: 'help', text: 'http or https; lsqd fetches it' })),
      el('div', { class: 'field' }, el('label', { for: 'ds-name', text: 'Name (with a URL)' }), name),
      el('div', { class: 'field' }, el('label', { for: 'ds-size', text: 'Resize to' }),
        el('input', { id: 'ds-size', name: 'ds-size', type: 'text', placeholder: 'HxW, e.g. 32x32', autocomplete: 'off' }),
        el('small', { class: 'help', text: 'default: the images\' own size' })),
      el('div', { class: 'field' }, el('label', { for: 'ds-channels', text: 'Channels' }),
        el('select', { id: 'ds-channels', name: 'ds-channels' },
          el('option', { value: '', text: 'as the images' }), el('option', { value: '1', text: '1 (grey)' }),
          el('option', { value: '3', text: '3 (colour)' })))),
    el('div', { class: 'actions' },
      el('button', { type: 'submit', class: 'primary', id: 'ds-register', text: 'Register' }), bar),
    status, err);

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.replaceChildren();
    const btn = form.querySelector('#ds-register');
    const f = file.files[0];
    const opts = readOptions(form);
    if (!f && !url.value.trim()) {
      err.replaceChildren(el('p', { class: 'error', text: 'Choose an archive to upload or give its URL.' }));
      return;
    }
    btn.disabled = true;
    try {
      let ds;
      if (f) {
        bar.hidden = false;
        bar.value = 0;
        status.textContent = `uploading ${f.name}…`;
        ds = await uploadDataset(f, opts, (x) => { bar.value = x; });
      } else {
        status.textContent = 'asking lsqd to fetch the URL…';
        const body = { url: url.value.trim(), ...opts };
        if (name.value.trim()) body.name = name.value.trim();
        ds = await api.registerDataset(body);
      }
      status.textContent = `${ds.name}: registering (#${ds.id})`;
      form.reset();
      onRegistered(ds);
    } catch (e) {
      status.textContent = '';
      err.replaceChildren(el('p', { class: 'error', text: `Not registered: ${e.message}${e.field ? ` (field ${e.field})` : ''}` }));
    } finally {
      btn.disabled = false;
      bar.hidden = true;
    }
  });
  return form;
}

function table(list) {
  const head = ['Name', 'State', 'Source', 'Shape', 'Classes', 'Train', 'Test', 'Size', 'Registered'];
  return el('div', { class: 'table-wrap' },
    el('table', { id: 'datasets-table' },
      el('caption', { class: 'sr-only', text: 'Datasets: built-in, then registered, newest first' }),
      el('thead', {}, el('tr', {}, head.map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, list.map((d) => {
        const s = d.summary || {};
        const counts = s.counts || {};
        const state = d.builtin ? (d.available ? 'ready' : 'missing') : d.state;
        return el('tr', { 'data-id': d.id == null ? null : String(d.id), 'data-state': state },
          el('td', {}, d.builtin ? el('span', { text: d.name }) : el('a', { href: `#/datasets/${d.id}`, text: d.name }),
            d.builtin ? null : el('span', { class: 'muted', text: ` #${d.id}` })),
          el('td', {}, datasetBadge(state)),
          el('td', { text: d.builtin ? 'built-in' : d.source }),
          el('td', { text: shapeText(s) }),
          el('td', { class: 'num', text: s.num_classes ?? '—' }),
          el('td', { class: 'num', text: counts.train ?? '—' }),
          el('td', { class: 'num', text: counts.test ?? '—' }),
          el('td', { class: 'num', text: d.bytes != null ? fmtBytes(d.bytes) : '—' }),
          el('td', { text: d.builtin ? '—' : fmtTime(d.created_at) }));
      }))));
}

function renderList(main) {
  const body = el('div', { id: 'datasets-body', 'aria-live': 'polite', 'aria-busy': 'true' },
    el('p', { class: 'loading', text: 'Loading datasets…' }));
  let timer = null, stopped = false;
  async function refresh() {
    clearTimeout(timer);
    let next = 5000;
    try {
      const { datasets } = await api.datasets();
      if (stopped) return;
      body.setAttribute('aria-busy', 'false');
      body.replaceChildren(datasets.length ? table(datasets) : emptyState('No datasets.'));
      if (datasets.some((d) => d.state === 'registering')) next = 700;
    } catch (e) {
      if (stopped) return;
      body.setAttribute('aria-busy', 'false');
      body.replaceChildren(errorBox(e, refresh));
    }
    if (!stopped) timer = setTimeout(refresh, next);
  }
  main.append(el('div', { class: 'page-head' }, el('h1', { text: 'Datasets' })),
    el('p', { class: 'muted', text: 'Jobs train on the built-in sets or on a dataset registered here. lsqd decodes an upload or a fetched URL once into a cache (lsq dataset import) and shows its classes and a few images of each.' }),
    registerForm(() => refresh()), body);
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

// An <img> cannot send the token: with one, the picture comes as a blob.
function samplesImg(d) {
  const path = `/api/v1/datasets/${d.id}/samples.png`;
  const img = el('img', { id: 'ds-samples', alt: `A few images of every class of ${d.name}, one row per class` });
  if (!token()) img.src = path;
  else blobUrl(path).then((url) => { img.onload = () => URL.revokeObjectURL(url); img.src = url; }).catch(() => {});
  return img;
}

// Images per class: a horizontal bar per class, train and test side by side.
function histogram(classes) {
  const max = Math.max(1, ...classes.map((c) => c.train + c.test));
  return el('div', { class: 'table-wrap' },
    el('table', { id: 'ds-histogram', class: 'hist' },
      el('caption', { text: 'Images per class' }),
      el('thead', {}, el('tr', {}, ['#', 'Class', 'Train', 'Test', ''].map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, classes.map((c) => el('tr', {},
        el('td', { class: 'num', text: c.index }), el('td', { text: c.name }),
        el('td', { class: 'num', text: c.train }), el('td', { class: 'num', text: c.test }),
        el('td', { class: 'hist-bar', 'aria-hidden': 'true' },
          el('span', { class: 'hist-train', style: `width:${(100 * c.train / max).toFixed(1)}%` }),
          el('span', { class: 'hist-test', style: `width:${(100 * c.test / max).toFixed(1)}%` })))))));
}

function renderOne(main, id) {
  const body = el('div', { id: 'dataset-body', 'aria-live': 'polite' }, el('p', { class: 'loading', text: 'Loading the dataset…' }));
  let timer = null, stopped = false, shown = null;
  main.append(el('p', {}, el('a', { href: '#/datasets', text: '← Datasets' })), body);
  async function refresh() {
    clearTimeout(timer);
    try {
      const d = await api.dataset(id);
      if (stopped) return;
      if (shown !== d.state) show(d);
      if (d.state === 'registering') timer = setTimeout(refresh, 700);
    } catch (e) {
      if (stopped) return;
      body.replaceChildren(errorBox(e, refresh));
    }
  }
  function show(d) {
    shown = d.state;
    const s = d.summary || {};
    const items = [['State', datasetBadge(d.state)], ['Source', d.origin ? `${d.source}: ${d.origin}` : d.source],
      ['Format', s.format || '—'], ['Shape (C×H×W)', shapeText(s)], ['Classes', s.num_classes ?? '—'],
      ['Train / test images', s.counts ? `${s.counts.train} / ${s.counts.test}` : '—'],
      ['Mean', Array.isArray(s.mean) ? s.mean.map((x) => fmtNum(x, 4)).join(', ') : '—'],
      ['Std', Array.isArray(s.std) ? s.std.map((x) => fmtNum(x, 4)).join(', ') : '—'],
      ['File', d.bytes != null ? fmtBytes(d.bytes) : '—'], ['Cache', s.cache_bytes != null ? fmtBytes(s.cache_bytes) : '—'],
      ['Registered', fmtTime(d.created_at)], ['Jobs using it', d.jobs_active]];
    const del = el('button', { type: 'button', class: 'danger', id: 'ds-delete', text: 'Delete dataset', disabled: d.state === 'registering' });
    const delMsg = el('span', { class: 'help', 'aria-live': 'polite' });
    del.addEventListener('click', async () => {
      try {
        await api.deleteDataset(d.id);
        location.hash = '#/datasets';
      } catch (e) { delMsg.textContent = e.message; }
    });
    body.replaceChildren(...[
      el('div', { class: 'page-head' }, el('h1', { text: `${d.name} #${d.id}` }),
        el('div', { class: 'tools' },
          d.state === 'ready' ? el('a', { class: 'button primary', href: `#/submit?dataset=${d.id}`, text: 'Train on it' }) : null,
          del, delMsg)),
      el('dl', { class: 'summary' }, items.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', {}, v)])),
      d.state === 'registering' ? el('p', { class: 'loading', text: 'lsqd is fetching and importing it…' }) : null,
      d.error ? el('div', { class: 'error', role: 'alert', id: 'ds-failed' },
        el('p', { text: `Registration failed (${d.error.code}): ${d.error.message}` })) : null,
      d.state === 'ready' && Array.isArray(s.classes) ? histogram(s.classes) : null,
      d.state === 'ready' ? el('figure', { class: 'samples' },
        samplesImg(d),
        el('figcaption', { class: 'help', text: 'One row per class, in class order' })) : null,
    ].filter(Boolean));
  }
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

export function render(main, id) {
  return id ? renderOne(main, Number(id)) : renderList(main);
}
