// Try it: send one 28 x 28 image (a Fashion-MNIST test image or a drawing),
// or a PNG or JPEG file of any size (lsqd converts it to the model's input),
// to a succeeded job's packed model (POST /predict) and show its top 3.
import { api } from './api.js';
import { el, fmtPct, bitsLabel, modelLabel, emptyState, errorBox, FASHION_CLASSES } from './ui.js';

const N = 28, SCALE = 10;
let samplesPromise = null;

function loadSamples() {
  if (!samplesPromise) {
    samplesPromise = Promise.all([
      fetch('/static/samples.json').then((r) => { if (!r.ok) throw new Error(`samples.json: HTTP ${r.status}`); return r.json(); }),
      new Promise((ok, fail) => { const img = new Image(); img.onload = () => ok(img); img.onerror = () => fail(new Error('samples.png did not load')); img.src = '/static/samples.png'; }),
    ]).then(([meta, img]) => {
      const c = document.createElement('canvas');
      c.width = img.width; c.height = img.height;
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, img.width, img.height).data;
      return meta.images.map((m, i) => {
        const px = new Float32Array(N * N);
        for (let y = 0; y < N; y++) for (let x = 0; x < N; x++) px[y * N + x] = d[4 * (y * img.width + i * N + x)];
        return { ...m, px };
      });
    });
    samplesPromise.catch(() => { samplesPromise = null; });
  }
  return samplesPromise;
}

export function render(main, idText) {
  main.append(el('h1', { text: 'Try it' }));
  const body = el('div', { 'aria-busy': 'true' }, el('p', { class: 'loading', text: 'Loading models…' }));
  main.append(body);
  let stopped = false;
  api.jobs('succeeded', 200).then(({ jobs }) => {
    if (stopped) return;
    body.setAttribute('aria-busy', 'false');
    const usable = jobs.filter((j) => j.spec.quant);
    if (!jobs.length) {
      body.replaceChildren(emptyState('No succeeded job yet: a model appears here when a job succeeds.', el('a', { href: '#/submit', text: 'Submit a job' })));
      return;
    }
    build(body, usable.length ? usable.concat(jobs.filter((j) => !j.spec.quant)) : jobs, Number(idText) || null);
  }).catch((e) => {
    if (stopped) return;
    body.setAttribute('aria-busy', 'false');
    body.replaceChildren(errorBox(e, () => { main.replaceChildren(); render(main, idText); }));
  });
  return () => { stopped = true; };
}

function build(body, jobs, wanted) {
  const px = new Float32Array(N * N);
  const select = el('select', { id: 'try-job', name: 'job' },
    jobs.map((j) => el('option', { value: String(j.id), text: `${j.name} #${j.id} · ${modelLabel(j.spec)} ${bitsLabel(j.spec)} · ${fmtPct(j.test_acc, 1)}` })));
  if (wanted && jobs.some((j) => j.id === wanted)) select.value = String(wanted);

  const canvas = el('canvas', { id: 'draw', width: String(N * SCALE), height: String(N * SCALE), tabindex: '0',
    'aria-label': 'Drawing area, 28 by 28 pixels. Draw with a mouse, pen or finger, or pick a test image above.' });
  const g = canvas.getContext('2d');
  const paint = () => {
    const img = g.createImageData(N, N);
    for (let i = 0; i < N * N; i++) { const v = Math.round(px[i]); img.data.set([v, v, v, 255], 4 * i); }
    const tmp = document.createElement('canvas');
    tmp.width = N; tmp.height = N;
    tmp.getContext('2d').putImageData(img, 0, 0);
    g.imageSmoothingEnabled = false;
    g.drawImage(tmp, 0, 0, N * SCALE, N * SCALE);
  };
  const source = el('p', { id: 'try-source', class: 'muted', text: 'Blank canvas.' });
  const results = el('div', { id: 'try-results', 'aria-live': 'polite' });

  let drawing = false, last = null;
  const brush = (cx, cy) => {
    for (let y = Math.floor(cy - 2); y <= Math.ceil(cy + 2); y++) {
      for (let x = Math.floor(cx - 2); x <= Math.ceil(cx + 2); x++) {
        if (x < 0 || y < 0 || x >= N || y >= N) continue;
        const d = Math.hypot(x + 0.5 - cx, y + 0.5 - cy);
        const v = 255 * Math.max(0, Math.min(1, 1.6 - d));
        px[y * N + x] = Math.max(px[y * N + x], v);
      }
    }
  };
  const at = (ev) => { const r = canvas.getBoundingClientRect(); return [(ev.clientX - r.left) / r.width * N, (ev.clientY - r.top) / r.height * N]; };
  canvas.addEventListener('pointerdown', (ev) => { drawing = true; canvas.setPointerCapture(ev.pointerId); last = at(ev); brush(...last); paint(); source.textContent = 'Your drawing.'; ev.preventDefault(); });
  canvas.addEventListener('pointermove', (ev) => {
    if (!drawing) return;
    const p = at(ev);
    const steps = Math.max(1, Math.ceil(Math.hypot(p[0] - last[0], p[1] - last[1]) * 3));
    for (let k = 1; k <= steps; k++) brush(last[0] + (p[0] - last[0]) * k / steps, last[1] + (p[1] - last[1]) * k / steps);
    last = p;
    paint();
  });
  const stop = () => { drawing = false; };
  canvas.addEventListener('pointerup', stop);
  canvas.addEventListener('pointercancel', stop);

  const clear = el('button', { type: 'button', id: 'try-clear', text: 'Clear', onclick: () => { px.fill(0); paint(); source.textContent = 'Blank canvas.'; results.replaceChildren(); } });
  const predict = el('button', { type: 'button', class: 'primary', id: 'try-predict', text: 'Classify', onclick: () => run() });
  const gallery = el('div', { class: 'gallery', id: 'samples', role: 'group', 'aria-label': 'Fashion-MNIST test images' },
    el('p', { class: 'loading', text: 'Loading test images…' }));

  loadSamples().then((samples) => {
    gallery.replaceChildren(...samples.map((s, i) => {
      const c = el('canvas', { width: String(N), height: String(N), 'aria-hidden': 'true' });
      const img = c.getContext('2d').createImageData(N, N);
      for (let k = 0; k < N * N; k++) img.data.set([s.px[k], s.px[k], s.px[k], 255], 4 * k);
      c.getContext('2d').putImageData(img, 0, 0);
      return el('button', { type: 'button', class: 'sample', 'data-sample': String(i), title: `${s.class} (test image ${s.index})`,
        'aria-label': `Test image ${s.index}: ${s.class}`,
        onclick: () => { px.set(s.px); paint(); source.textContent = `Fashion-MNIST test image ${s.index}, labelled ${s.class}.`; run(); } }, c);
    }));
  }).catch((e) => gallery.replaceChildren(el('p', { class: 'error', text: `Test images unavailable (${e.message}); draw one instead.` })));

  // a file goes as it is, base64 in a data: URL
  const file = el('input', { type: 'file', id: 'try-file', accept: 'image/png,image/jpeg,.png,.jpg,.jpeg' });
  file.addEventListener('change', () => {
    const f = file.files[0];
    if (!f) return;
    const reader = new FileReader();
    reader.onload = () => { source.textContent = `File ${f.name}.`; run(reader.result); file.value = ''; };
    reader.onerror = () => { results.replaceChildren(el('p', { class: 'error', role: 'alert', text: `Cannot read ${f.name}.` })); };
    reader.readAsDataURL(f);
  });

  async function run(image) {
    const id = Number(select.value);
    predict.disabled = true;
    results.replaceChildren(el('p', { class: 'loading', text: 'Classifying…' }));
    const rows = [];
    for (let y = 0; y < N; y++) rows.push(Array.from(px.subarray(y * N, (y + 1) * N), (v) => Math.round(v)));
    try {
      const r = await api.predict(id, [typeof image === 'string' ? image : rows]);
      const p = r.predictions[0];
      const probs = p.probabilities.map((v, k) => ({ k, v }));
      probs.sort((a, b) => b.v - a.v);
      const names = (k) => (k === p.class ? p.label : className(select, jobs, k));
      results.replaceChildren(el('h2', { text: 'Top 3' }), el('ol', { class: 'top3', id: 'top3' },
        probs.slice(0, 3).map(({ k, v }) => el('li', {},
          el('span', { class: 'cls', text: names(k) }),
          el('span', { class: 'bar', 'aria-hidden': 'true' }, el('span', { style: `width:${(100 * v).toFixed(1)}%` })),
          el('span', { class: 'num', text: fmtPct(v, 1) })))));
    } catch (e) {
      results.replaceChildren(el('div', { class: 'error', role: 'alert' },
        el('p', { text: e.code === 'unreachable' ? 'lsqd is unreachable.' : `The model could not classify the image: ${e.message}` })));
    } finally {
      predict.disabled = false;
    }
  }

  body.replaceChildren(
    el('div', { class: 'field' }, el('label', { for: 'try-job', text: 'Model (a succeeded job)' }), select),
    el('h2', { text: 'Pick a test image' }), gallery,
    el('h2', { text: 'Or draw one' }),
    el('p', { class: 'muted', text: 'Light on dark, like the dataset: draw the garment in white on the black square.' }),
    el('div', { class: 'try-row' }, canvas, el('div', { class: 'try-side' }, source, el('div', { class: 'actions' }, predict, clear), results)),
    el('h2', { text: 'Or send an image file' }),
    el('div', { class: 'field' }, el('label', { for: 'try-file', text: 'A PNG or JPEG of any size, grey or colour: lsqd converts it to the model\'s input' }), file));
  paint();
}

// Names of the classes the API did not label (it labels the top class).
function className(select, jobs, k) {
  const j = jobs.find((x) => String(x.id) === select.value);
  const ds = j && j.spec.dataset && j.spec.dataset.name;
  const cache = j && j.spec.dataset && j.spec.dataset.cache;
  return ds === 'mnist' || cache ? String(k) : (FASHION_CLASSES[k] ?? String(k));
}
