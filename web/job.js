// One job: live progress and charts from its event stream (SSE, replayed
// from the first event, resumed by the browser with Last-Event-ID), per-layer
// bits and learned step sizes, artifacts, the event log and cancel.
import { api, token, download } from './api.js';
import { Chart } from './chart.js';
import { el, stateBadge, fmtPct, fmtNum, fmtBytes, fmtDuration, fmtTime, jobDuration, modelLabel,
  bitsLabel, progressBar, phasesOf, epochPosition, FINISHED, errorBox } from './ui.js';

const LOG_MAX = 400;

export function render(main, idText) {
  const id = Number(idText);
  const head = el('div', { class: 'page-head' }, el('h1', { text: `Job #${id}` }));
  const body = el('div', { 'aria-busy': 'true' }, el('p', { class: 'loading', text: 'Loading the job…' }));
  main.append(head, body);
  let stopped = false, es = null, timer = null;
  const cleanup = () => { stopped = true; if (es) es.close(); clearTimeout(timer); };

  api.job(id).then((job) => {
    if (stopped) return;
    body.setAttribute('aria-busy', 'false');
    const view = new JobView(id, head, body, job);
    const poll = async () => {
      try {
        const j = await api.job(id);
        if (stopped) return;
        view.setJob(j);
        if (FINISHED.includes(j.state)) { view.loadArtifacts(); return; }
      } catch { /* banner shows reachability */ }
      if (!stopped) timer = setTimeout(poll, 2000);
    };
    poll();
    view.loadArtifacts();
    es = new EventSource(api.eventsUrl(id));
    const types = ['start', 'progress', 'epoch', 'checkpoint', 'artifact', 'done', 'error', 'log'];
    for (const t of types) {
      es.addEventListener(t, (m) => {
        let data;
        try { data = JSON.parse(m.data); } catch { return; }
        view.onEvent(t, data, Number(m.lastEventId));
      });
    }
    es.addEventListener('end', () => { es.close(); view.setStream('complete'); view.loadArtifacts(); poll(); });
    es.addEventListener('open', () => view.setStream('live'));
    es.addEventListener('error', () => view.setStream(es.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting'));
  }).catch((e) => {
    if (stopped) return;
    body.setAttribute('aria-busy', 'false');
    body.replaceChildren(e.status === 404
      ? el('div', { class: 'error', role: 'alert' }, el('p', { text: `There is no job #${id}.` }), el('a', { href: '#/jobs', text: 'All jobs' }))
      : errorBox(e, () => { cleanup(); main.replaceChildren(); stopped = false; render(main, idText); }));
  });
  return cleanup;
}

class JobView {
  constructor(id, head, body, job) {
    this.id = id;
    this.head = head;
    this.job = job;
    this.seen = new Set();
    this.loss = []; this.lr = []; this.epochs = []; this.layers = new Map();
    this.artifacts = null;

    this.title = el('h1', {});
    this.cancelBtn = el('button', { type: 'button', class: 'danger', id: 'cancel-btn', text: 'Cancel job', onclick: () => this.cancel() });
    this.tryLink = el('a', { class: 'button', href: `#/try/${id}`, text: 'Try it', hidden: true });
    head.replaceChildren(this.title, el('div', { class: 'tools' }, this.tryLink, this.cancelBtn));
    this.msg = el('div', { role: 'status', class: 'msg' });
    this.progress = el('div', { class: 'job-progress' });
    this.summary = el('dl', { class: 'summary' });
    this.streamState = el('span', { class: 'muted', id: 'stream-state', text: 'connecting to the event stream…' });

    this.lossChart = new Chart({ id: 'chart-loss', title: 'Loss', xLabel: 'epoch', yLabel: 'loss' });
    this.accChart = new Chart({ id: 'chart-acc', title: 'Accuracy', xLabel: 'epoch', yLabel: 'accuracy', yMax: 1, yFormat: (v) => `${Math.round(v * 100)}%` });
    this.lrChart = new Chart({ id: 'chart-lr', title: 'Learning rate', xLabel: 'epoch', yLabel: 'lr' });
    this.wStepChart = new Chart({ id: 'chart-wstep', title: 'Learned weight step sizes s (LSQ)', xLabel: 'LSQ epoch', yLabel: 'step size', logY: true, xInt: true, empty: 'No LSQ epoch yet' });
    this.aStepChart = new Chart({ id: 'chart-astep', title: 'Learned activation step sizes s (LSQ)', xLabel: 'LSQ epoch', yLabel: 'step size', logY: true, xInt: true, empty: 'No LSQ epoch yet' });
    this.layerTable = el('div', { class: 'table-wrap' });
    this.artTable = el('div', { id: 'artifacts' }, el('p', { class: 'loading', text: 'Loading artifacts…' }));
    this.compression = el('div', { id: 'compression' });
    this.log = el('ol', { id: 'event-log', class: 'log', role: 'log', 'aria-label': 'Event log', tabindex: '0' });
    this.specPre = el('pre', { text: JSON.stringify(job.spec, null, 2) });

    body.replaceChildren(
      this.msg,
      el('section', { 'aria-labelledby': 'h-status' }, el('h2', { id: 'h-status', class: 'sr-only', text: 'Status' }),
        this.progress, this.summary),
      el('section', { 'aria-labelledby': 'h-charts' },
        el('h2', { id: 'h-charts' }, 'Training ', this.streamState),
        el('div', { class: 'charts' }, this.lossChart.node, this.accChart.node, this.lrChart.node)),
      el('section', { 'aria-labelledby': 'h-layers' },
        el('h2', { id: 'h-layers', text: 'Layers: bits and learned step sizes' }),
        this.layerTable,
        el('div', { class: 'charts' }, this.wStepChart.node, this.aStepChart.node)),
      el('section', { 'aria-labelledby': 'h-model' },
        el('h2', { id: 'h-model', text: 'Model and artifacts' }), this.compression, this.artTable),
      el('section', { 'aria-labelledby': 'h-log' },
        el('h2', { id: 'h-log', text: 'Event log' }), this.log),
      el('details', {}, el('summary', { text: 'Normalised job spec' }), this.specPre));
    const markers = [];
    let off = 0;
    for (const [p, n] of phasesOf(job.spec)) { if (off > 0) markers.push({ x: off, label: p }); off += n; }
    for (const c of [this.lossChart, this.accChart, this.lrChart]) c.setMarkers(markers);
    this.renderLayers();
    this.setJob(job);
  }

  setStream(s) {
    this.streamState.textContent = { live: '· live', complete: '· complete', closed: '· stream closed', reconnecting: '· reconnecting…' }[s] || '';
  }

  setJob(job) {
    this.job = job;
    this.title.replaceChildren(`${job.name} `, el('span', { class: 'muted', text: `#${job.id} ` }), stateBadge(job.state));
    this.cancelBtn.hidden = FINISHED.includes(job.state);
    this.cancelBtn.disabled = !!job.cancel_requested;
    if (job.cancel_requested && !FINISHED.includes(job.state)) this.cancelBtn.textContent = 'Cancelling…';
    this.tryLink.hidden = job.state !== 'succeeded';
    const p = job.progress;
    this.progress.replaceChildren(progressBar(job, `Progress of job ${job.name}`),
      el('p', { class: 'muted', text: p && job.state === 'running'
        ? `${p.phase} epoch ${p.epoch}/${p.epochs}, step ${p.step}/${p.steps} · ${Math.round(p.images_per_s)} images/s · about ${fmtDuration(p.eta_s)} left in this phase`
        : job.state === 'queued' ? 'Waiting for a worker.' : '' }));
    const le = job.last_epoch;
    const rows = [
      ['Model', modelLabel(job.spec)], ['Bits', bitsLabel(job.spec)],
      ['Test accuracy', fmtPct(job.test_acc ?? (le && le.test_acc), 2)],
      ['Duration', fmtDuration(jobDuration(job))], ['Created', fmtTime(job.created_at)],
      ['Attempts', String(job.attempts)],
    ];
    if (job.error) rows.push(['Error', `${job.error.code}: ${job.error.message}`]);
    this.summary.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
  }

  x(phase, epoch, frac) { return epochPosition(this.job.spec, phase, epoch, frac); }

  onEvent(type, e, seq) {
    if (seq && this.seen.has(seq)) return;
    if (seq) this.seen.add(seq);
    this.addLog(type, e, seq);
    if (type === 'progress') {
      const x = this.x(e.phase, e.epoch, e.steps ? e.step / e.steps : 1);
      this.loss.push({ x, y: e.loss, phase: e.phase });
      this.lr.push({ x, y: e.lr, phase: e.phase });
      this.job.progress = e;
      if (this.job.state === 'queued') this.job.state = 'running';
      this.setJob(this.job);
      this.drawTraining();
    } else if (type === 'epoch') {
      this.epochs.push({ x: this.x(e.phase, e.epoch, 1), e });
      this.job.last_epoch = e;
      if (e.step_sizes || e.bits) this.addLayerEpoch(e);
      this.drawTraining();
    } else if (type === 'artifact') {
      this.loadArtifacts();
    } else if (type === 'error') {
      this.msg.replaceChildren(el('p', { class: 'error', text: `The job reported an error: ${e.code}: ${e.message}` }));
    }
  }

  drawTraining() {
    const pts = (arr) => arr.map((p) => [p.x, p.y]);
    const ep = (k) => this.epochs.filter((p) => typeof p.e[k] === 'number').map((p) => [p.x, p.e[k], `${p.e.phase} epoch ${p.e.epoch}: ${fmtNum(p.e[k], 4)}`]);
    this.lossChart.setSeries([
      { name: 'training loss (steps)', points: pts(this.loss) },
      { name: 'train loss (epoch)', points: ep('train_loss'), dots: true, line: false },
      { name: 'test loss (epoch)', points: ep('test_loss'), dots: true, dash: '5 4' },
    ]);
    this.accChart.setSeries([
      { name: 'train accuracy', points: ep('train_acc'), dots: true },
      { name: 'test accuracy', points: ep('test_acc'), dots: true },
    ]);
    this.lrChart.setSeries([{ name: 'learning rate', points: pts(this.lr) }]);
  }

  addLayerEpoch(e) {
    for (const [name, b] of Object.entries(e.bits || {})) {
      const L = this.layer(name);
      L.bits = b;
    }
    for (const [key, s] of Object.entries(e.step_sizes || {})) {
      const dot = key.lastIndexOf('.');
      const name = key.slice(0, dot), kind = key.slice(dot + 1);
      const L = this.layer(name);
      (kind === 'weight' ? L.w : L.a).push([e.epoch, s]);
    }
    this.renderLayers();
  }

  layer(name) {
    if (!this.layers.has(name)) this.layers.set(name, { bits: null, w: [], a: [] });
    return this.layers.get(name);
  }

  renderLayers() {
    if (!this.layers.size) {
      this.layerTable.replaceChildren(el('p', { class: 'empty', text: this.job.spec.quant
        ? 'Bits and step sizes appear after the first LSQ epoch.' : 'A full-precision job: no quantized layers.' }));
    } else {
      const last = (a) => (a.length ? fmtNum(a[a.length - 1][1], 4) : '—');
      this.layerTable.replaceChildren(el('table', { id: 'layers-table' },
        el('thead', {}, el('tr', {}, ['Layer', 'Weight bits', 'Activation bits', 'Weight step s', 'Activation step s'].map((h) => el('th', { scope: 'col', text: h })))),
        el('tbody', {}, [...this.layers].map(([name, L]) => el('tr', {},
          el('th', { scope: 'row', text: name }),
          el('td', { class: 'num', text: L.bits ? String(L.bits.weight ?? 'float') : 'float' }),
          el('td', { class: 'num', text: L.bits ? String(L.bits.act ?? 'float') : 'float' }),
          el('td', { class: 'num', text: last(L.w) }),
          el('td', { class: 'num', text: last(L.a) }))))));
    }
    const entries = [...this.layers];
    this.wStepChart.setSeries(entries.filter(([, L]) => L.w.length).map(([n, L]) => ({ name: n, points: L.w, dots: true })));
    this.aStepChart.setSeries(entries.filter(([, L]) => L.a.length).map(([n, L]) => ({ name: n, points: L.a, dots: true })));
  }

  addLog(type, e, seq) {
    const { type: _t, time, ...rest } = e;
    let text;
    if (type === 'progress') text = `${e.phase} epoch ${e.epoch} step ${e.step}/${e.steps} loss ${fmtNum(e.loss, 4)} lr ${fmtNum(e.lr, 3)}`;
    else if (type === 'epoch') text = `${e.phase} epoch ${e.epoch}: train acc ${fmtPct(e.train_acc, 2)}, test acc ${fmtPct(e.test_acc, 2)}, train loss ${fmtNum(e.train_loss, 4)}`;
    else if (type === 'artifact') text = `${e.name}: ${fmtBytes(e.bytes)}`;
    else if (type === 'done') text = `test accuracy ${fmtPct(e.test_acc, 2)}`;
    else if (type === 'error') text = `${e.code}: ${e.message}`;
    else if (type === 'log') text = e.message + Object.entries(rest).filter(([k]) => k !== 'message').map(([k, v]) => ` ${k}=${typeof v === 'number' ? fmtNum(v, 4) : JSON.stringify(v)}`).join('');
    else text = JSON.stringify(rest);
    const li = el('li', { class: `ev ev-${type}` },
      el('span', { class: 'ev-seq', text: seq ? `#${seq}` : '' }),
      el('time', { text: time ? new Date(time * 1000).toLocaleTimeString() : '' }),
      el('span', { class: 'ev-type', text: type }),
      el('span', { class: 'ev-text', text }));
    const stick = this.log.scrollTop + this.log.clientHeight >= this.log.scrollHeight - 8;
    this.log.append(li);
    while (this.log.children.length > LOG_MAX) this.log.firstChild.remove();
    if (stick) this.log.scrollTop = this.log.scrollHeight;
  }

  async loadArtifacts() {
    try {
      const { artifacts } = await api.artifacts(this.id);
      this.artifacts = artifacts;
      this.renderArtifacts();
    } catch (e) {
      this.artTable.replaceChildren(errorBox(e));
    }
  }

  renderArtifacts() {
    const arts = this.artifacts || [];
    if (!arts.length) {
      this.artTable.replaceChildren(el('p', { class: 'empty', text: FINISHED.includes(this.job.state) ? 'This job produced no artifacts.' : 'No artifacts yet: they appear as the job writes them.' }));
    } else {
      this.artTable.replaceChildren(el('div', { class: 'table-wrap' }, el('table', { id: 'artifacts-table' },
        el('thead', {}, el('tr', {}, ['File', 'Size', 'SHA-256', 'Download'].map((h) => el('th', { scope: 'col', text: h })))),
        el('tbody', {}, arts.map((a) => el('tr', { 'data-name': a.name },
          el('th', { scope: 'row', text: a.name }),
          el('td', { class: 'num', text: fmtBytes(a.bytes), title: `${a.bytes} bytes` }),
          el('td', {}, el('code', { text: a.sha256.slice(0, 16) + '…', title: a.sha256 })),
          el('td', {}, el('a', {
            href: api.artifactUrl(this.id, a.name), download: a.name, 'aria-label': `Download ${a.name}`, text: 'Download',
            // a link cannot send the token: with one, the file comes by fetch
            onclick: (e) => { if (token()) { e.preventDefault(); download(api.artifactUrl(this.id, a.name), a.name).catch(() => {}); } },
          }))))))));
    }
    this.renderCompression();
  }

  renderCompression() {
    const by = Object.fromEntries((this.artifacts || []).map((a) => [a.name, a]));
    const fp = by['fp.lsqc'], q = by['model.lsqm'];
    if (!this.job.spec.quant) {
      this.compression.replaceChildren(el('p', { class: 'muted', text: 'A full-precision job: nothing is compressed.' }));
    } else if (fp && q) {
      this.compression.replaceChildren(el('p', { class: 'compression' },
        el('strong', { text: `${(fp.bytes / q.bytes).toFixed(1)}× smaller than FP32` }),
        `: the packed integer model model.lsqm is ${fmtBytes(q.bytes)}; the full-precision checkpoint fp.lsqc (every parameter as a 32-bit float, plus layer state and a header) is ${fmtBytes(fp.bytes)}.`));
    } else {
      this.compression.replaceChildren(el('p', { class: 'muted', text: fp
        ? `Compression against FP32 appears when the packed model model.lsqm exists (FP32 checkpoint fp.lsqc: ${fmtBytes(fp.bytes)}).`
        : 'Compression against FP32 appears when the full-precision checkpoint fp.lsqc and the packed model model.lsqm exist.' }));
    }
  }

  async cancel() {
    this.cancelBtn.disabled = true;
    this.cancelBtn.textContent = 'Cancelling…';
    try {
      await api.cancel(this.id);
      this.msg.replaceChildren(el('p', { class: 'ok', text: 'Cancel requested: the job checkpoints and stops.' }));
    } catch (e) {
      this.cancelBtn.disabled = false;
      this.cancelBtn.textContent = 'Cancel job';
      this.msg.replaceChildren(el('p', { class: 'error', text: `Cannot cancel: ${e.message}` }));
    }
  }
}
