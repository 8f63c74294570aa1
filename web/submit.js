// Submit: a form over the main fields of the job spec, defaults filled in.
// The API validates; its 422 {"error":{"field":"train.lr",...}} is shown next
// to the input for that field (or the nearest enclosing one).
import { api, uploadModel } from './api.js';
import { el } from './ui.js';

const BITS = ['2', '3', '4', '5', '6', '7', '8'];
// path: the spec key; kind: text | int | num | select | check
const GROUPS = [
  ['Job', [
    { path: 'name', label: 'Name', kind: 'text', def: 'job', help: 'Letters, digits, . _ -' },
  ]],
  ['Model and data', [
    { path: 'model.arch', label: 'Model', kind: 'select', def: 'cnn-small', options: ['mlp', 'cnn-small', 'resnet20'] },
    { path: 'dataset.name', label: 'Dataset', kind: 'select', def: 'fashion-mnist', options: ['fashion-mnist', 'mnist'] },
    { path: 'dataset.train_limit', label: 'Training images', kind: 'int', def: '0', help: '0: all 60000' },
    { path: 'dataset.test_limit', label: 'Test images', kind: 'int', def: '0', help: '0: all 10000' },
  ]],
  ['Quantization (LSQ)', [
    { path: 'quant', label: 'Quantize (off: a full-precision job)', kind: 'check', def: true },
    { path: 'quant.weight_bits', label: 'Weight bits', kind: 'select', def: '4', options: BITS, q: true },
    { path: 'quant.act_bits', label: 'Activation bits', kind: 'select', def: '', options: [['', 'same as weights'], ...BITS], q: true },
    { path: 'quant.method', label: 'Method', kind: 'select', def: '', options: [['', 'LSQ fine-tuning'], ['ptq', 'post-training only (seconds, no training)']], q: true },
    { path: 'quant.first_last_bits', label: 'First/last layer bits', kind: 'select', def: '8', options: [...BITS, ['float', 'float (unquantized)']], q: true },
    { path: 'distill', label: 'Distillation', kind: 'select', def: '', options: [['', 'auto (on with a teacher, 3 bits and above)'], ['true', 'on'], ['false', 'off']], q: true },
  ]],
  ['Full-precision pretraining', [
    { path: 'pretrain.epochs', label: 'Epochs', kind: 'int', def: '6', help: '0: off', q: true },
    { path: 'pretrain.lr', label: 'Learning rate', kind: 'num', def: '0.05', q: true },
    { path: 'pretrain.batch_size', label: 'Batch size', kind: 'int', def: '128', q: true },
  ]],
  ['Training (LSQ phase, or the whole run when full precision)', [
    { path: 'train.epochs', label: 'Epochs', kind: 'int', def: '3' },
    { path: 'train.lr', label: 'Learning rate', kind: 'num', def: '', placeholder: 'auto: 0.01 (0.001 at 8 bits)' },
    { path: 'train.batch_size', label: 'Batch size', kind: 'int', def: '128' },
  ]],
];

const inputId = (path) => 'f-' + path.replace(/\./g, '-');

function fieldRow(f) {
  const id = inputId(f.path);
  const errId = id + '-err', helpId = id + '-help';
  let input;
  if (f.kind === 'select') {
    input = el('select', { id, name: f.path },
      f.options.map((o) => Array.isArray(o) ? el('option', { value: o[0], text: o[1] }) : el('option', { value: o, text: o })));
    input.value = f.def;
  } else if (f.kind === 'check') {
    input = el('input', { id, name: f.path, type: 'checkbox' });
    input.checked = f.def;
  } else {
    input = el('input', { id, name: f.path, type: 'text', value: f.def, placeholder: f.placeholder || '',
      inputmode: f.kind === 'int' ? 'numeric' : f.kind === 'num' ? 'decimal' : null, autocomplete: 'off' });
  }
  input.dataset.field = f.path;
  input.setAttribute('aria-describedby', `${f.help ? helpId + ' ' : ''}${errId}`);
  const defText = f.kind === 'check' ? '' : `default: ${f.def === '' ? (f.placeholder || (f.options && f.options[0][1]) || 'auto') : f.def}`;
  return el('div', { class: `field ${f.kind === 'check' ? 'check' : ''}`, 'data-q': f.q ? '1' : null },
    el('label', { for: id, text: f.label }),
    input,
    el('small', { id: helpId, class: 'help', text: [f.help, defText].filter(Boolean).join(' · ') }),
    el('span', { id: errId, class: 'field-error', 'aria-live': 'assertive' }));
}

function readSpec(form) {
  const spec = {};
  const set = (path, v) => {
    const keys = path.split('.');
    let o = spec;
    for (const k of keys.slice(0, -1)) o = o[k] = o[k] && typeof o[k] === 'object' ? o[k] : {};
    o[keys[keys.length - 1]] = v;
  };
  const quant = form.elements['quant'].checked;
  const arch = form.elements['model.arch'].value;
  if (arch.startsWith('onnx:')) spec.model = { onnx: parseInt(arch.slice(5), 10) };
  const ds = form.elements['dataset.name'].value;
  if (ds.startsWith('ds:')) spec.dataset = { id: parseInt(ds.slice(3), 10) };
  for (const [, fields] of GROUPS) {
    for (const f of fields) {
      if (f.kind === 'check') continue;
      if (f.q && !quant) continue;
      if (f.path === 'model.arch' && spec.model) continue;
      if (f.path === 'dataset.name' && spec.dataset && spec.dataset.id) continue;
      const raw = form.elements[f.path].value.trim();
      if (raw === '') continue;
      let v = raw;
      if (f.path === 'distill') v = raw === 'true';
      else if (f.kind === 'int' || (f.kind === 'select' && /^\d+$/.test(raw))) v = /^-?\d+$/.test(raw) ? parseInt(raw, 10) : raw;
      else if (f.kind === 'num') v = isFinite(Number(raw)) ? Number(raw) : raw;
      set(f.path, v);
    }
  }
  if (quant) { if (!spec.quant) spec.quant = {}; } else spec.quant = null;
  return spec;
}

function clearErrors(form) {
  for (const e of form.querySelectorAll('.field-error')) e.textContent = '';
  for (const i of form.querySelectorAll('[aria-invalid]')) i.removeAttribute('aria-invalid');
  form.querySelector('#form-error').replaceChildren();
}

// The input for a field path: exact, else the longest enclosing path.
function inputFor(form, field) {
  let path = field || '';
  while (path) {
    const input = form.querySelector(`[data-field="${CSS.escape(path)}"]`);
    if (input && !input.closest('[hidden]')) return input;
    const cut = Math.max(path.lastIndexOf('.'), path.lastIndexOf('['));
    path = cut > 0 ? path.slice(0, cut) : '';
  }
  return null;
}

// Uploaded models as options of the Model select ("onnx:ID"), and a file
// input beside it that uploads an .onnx file and selects it.
function modelLabel(m) {
  const s = m.summary || {};
  const shape = Array.isArray(s.input) ? s.input.join('×') : '?';
  return `${m.name} (uploaded #${m.id}, ${shape}, ${s.classes ?? '?'} classes)`;
}

async function fillModels(select, selectId) {
  let list = [];
  try { list = (await api.models()).models || []; } catch { return; }
  for (const o of [...select.querySelectorAll('option[data-onnx]')]) o.remove();
  for (const m of list) {
    select.append(el('option', { value: `onnx:${m.id}`, text: modelLabel(m), 'data-onnx': '1' }));
  }
  if (selectId) select.value = `onnx:${selectId}`;
}

// Ready registered datasets as options of the Dataset select ("ds:ID"),
// after the built-in sets.
async function fillDatasets(select, selectId) {
  let list = [];
  try { list = (await api.datasets()).datasets || []; } catch { return; }
  for (const o of [...select.querySelectorAll('option[data-ds]')]) o.remove();
  for (const d of list) {
    if (d.builtin || d.state !== 'ready') continue;
    const s = d.summary || {};
    const shape = Array.isArray(s.shape) ? s.shape.join('×') : '?';
    select.append(el('option', { value: `ds:${d.id}`, text: `${d.name} (#${d.id}, ${shape}, ${s.num_classes ?? '?'} classes)`, 'data-ds': '1' }));
  }
  if (selectId && select.querySelector(`option[value="ds:${selectId}"]`)) select.value = `ds:${selectId}`;
}

function uploadRow(form, sync) {
  const select = form.elements['model.arch'];
  const file = el('input', { id: 'f-model-upload', type: 'file', accept: '.onnx' });
  const bar = el('progress', { id: 'model-upload-progress', max: 1, value: 0, hidden: true });
  const note = el('span', { id: 'model-upload-status', class: 'help', 'aria-live': 'polite' });
  const errSlot = select.parentElement.querySelector('.field-error');
  file.addEventListener('change', async () => {
    const f = file.files[0];
    if (!f) return;
    errSlot.textContent = '';
    select.removeAttribute('aria-invalid');
    bar.hidden = false;
    bar.value = 0;
    note.textContent = `uploading ${f.name}…`;
    try {
      const m = await uploadModel(f, (x) => { bar.value = x; });
      note.textContent = `${f.name}: ${m.summary.layers ?? '?'} layers, ${m.summary.parameters ?? '?'} parameters`;
      await fillModels(select, m.id);
      sync();
    } catch (e) {
      note.textContent = '';
      errSlot.textContent = `Upload refused: ${e.message}`;
      select.setAttribute('aria-invalid', 'true');
    } finally {
      bar.hidden = true;
      file.value = '';
    }
  });
  return el('div', { class: 'field' },
    el('label', { for: 'f-model-upload', text: 'Or upload an ONNX model' }), file, bar, note);
}

export function render(main, datasetId) {
  const form = el('form', { id: 'submit-form', novalidate: true });
  const preview = el('pre', { id: 'spec-preview' });
  const status = el('div', { id: 'form-error', role: 'alert' });
  form.append(status);
  for (const [title, fields] of GROUPS) {
    form.append(el('fieldset', { 'data-group': title }, el('legend', { text: title }), fields.map(fieldRow)));
  }
  const btn = el('button', { type: 'submit', class: 'primary', id: 'submit-btn', text: 'Submit job' });
  form.append(el('div', { class: 'actions' }, btn, el('button', { type: 'reset', text: 'Reset to defaults' })),
    el('details', {}, el('summary', { text: 'Spec JSON that will be sent' }), preview));

  const sync = () => {
    const quant = form.elements['quant'].checked;
    for (const row of form.querySelectorAll('[data-q]')) row.hidden = !quant;
    for (const fs of form.querySelectorAll('fieldset')) fs.hidden = !quant && fs.dataset.group === 'Full-precision pretraining';
    preview.textContent = JSON.stringify(readSpec(form), null, 2);
  };
  const modelSelect = form.elements['model.arch'];
  modelSelect.parentElement.after(uploadRow(form, sync));
  fillModels(modelSelect).then(sync);
  const dsSelect = form.elements['dataset.name'];
  dsSelect.parentElement.querySelector('.help').append(' · ', el('a', { href: '#/datasets', text: 'register a dataset' }));
  fillDatasets(dsSelect, datasetId).then(sync);
  form.addEventListener('input', sync);
  form.addEventListener('change', sync);
  form.addEventListener('reset', () => setTimeout(() => { clearErrors(form); sync(); }));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const spec = readSpec(form);
    btn.disabled = true;
    btn.textContent = 'Submitting…';
    try {
      const job = await api.submit(spec);
      location.hash = `#/jobs/${job.id}`;
    } catch (e) {
      const field = e.field === 'dataset.id' ? 'dataset.name' : e.field;
      const input = field ? inputFor(form, field) : null;
      if (input) {
        const slot = input.parentElement.querySelector('.field-error');
        slot.textContent = e.message;
        input.setAttribute('aria-invalid', 'true');
        input.focus();
      }
      status.replaceChildren(el('p', { class: 'error', text: e.code === 'unreachable'
        ? 'lsqd is unreachable; the job was not submitted.'
        : `Not submitted: ${e.message}${e.field && !input ? ` (field ${e.field})` : ''}` }));
    } finally {
      btn.disabled = false;
      btn.textContent = 'Submit job';
    }
  });
  main.append(el('h1', { text: 'Submit a job' }),
    el('p', { class: 'muted', text: 'Fields left at their defaults train the paper\'s recipe: full-precision pretraining, then LSQ fine-tuning (with distillation at 3 bits and above). An uploaded ONNX model starts from its own weights. Every field is checked by lsqd.' }),
    form);
  sync();
}
