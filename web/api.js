// The REST API of lsqd, as used by the dashboard. Every call resolves to the
// decoded JSON or throws an ApiError: {status, code, message, field}. A
// network failure (lsqd unreachable) is status 0, code "unreachable".

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || null;
  }
}

const listeners = new Set();
// fn(ok: boolean, err?: ApiError): told after every request whether lsqd answered.
export function onReachability(fn) { listeners.add(fn); }
function tell(ok, err) { for (const fn of listeners) fn(ok, err); }

export async function request(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    const err = new ApiError(0, 'unreachable', `lsqd is unreachable (${e.message})`);
    tell(false, err);
    throw err;
  }
  tell(true);
  const text = await res.text();
  let json = null;
  if (text) {
    try { json = JSON.parse(text); } catch { /* not JSON: reported below */ }
  }
  if (!res.ok) {
    const e = json && json.error;
    if (e) throw new ApiError(res.status, e.code, e.message, e.field);
    throw new ApiError(res.status, 'http_' + res.status, `HTTP ${res.status} ${res.statusText}`);
  }
  if (json === null && text) throw new ApiError(res.status, 'bad_reply', 'the reply is not JSON');
  return json;
}

export const api = {
  jobs: (state, limit = 200) => {
    const q = new URLSearchParams({ limit: String(limit) });
    if (state) q.set('state', state);
    return request('GET', `/api/v1/jobs?${q}`);
  },
  job: (id) => request('GET', `/api/v1/jobs/${id}`),
  submit: (spec) => request('POST', '/api/v1/jobs', spec),
  cancel: (id) => request('POST', `/api/v1/jobs/${id}/cancel`),
  artifacts: (id) => request('GET', `/api/v1/jobs/${id}/artifacts`),
  predict: (id, images) => request('POST', `/api/v1/jobs/${id}/predict`, { images }),
  health: () => request('GET', '/healthz'),
  models: () => request('GET', '/api/v1/models'),
  deleteModel: (id) => request('DELETE', `/api/v1/models/${id}`),
  datasets: () => request('GET', '/api/v1/datasets'),
  dataset: (id) => request('GET', `/api/v1/datasets/${id}`),
  registerDataset: (body) => request('POST', '/api/v1/datasets', body),
  deleteDataset: (id) => request('DELETE', `/api/v1/datasets/${id}`),
  eventsUrl: (id) => `/api/v1/jobs/${id}/events`,
  artifactUrl: (id, name) => `/api/v1/jobs/${id}/artifacts/${encodeURIComponent(name)}`,
};

// Artifacts of finished jobs do not change: fetched once each.
const artifactCache = new Map();
export async function finishedArtifacts(job) {
  if (artifactCache.has(job.id)) return artifactCache.get(job.id);
  const p = api.artifacts(job.id).then((r) => r.artifacts);
  if (['succeeded', 'failed', 'cancelled'].includes(job.state)) {
    artifactCache.set(job.id, p);
    p.catch(() => artifactCache.delete(job.id));
  }
  return p;
}

// Uploads a file as the raw body of POST path (application/octet-stream),
// reporting progress(fraction) as it goes (fetch cannot: XMLHttpRequest).
// Resolves to the decoded reply or throws an ApiError like request().
export function upload(path, file, progress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && progress) progress(e.loaded / e.total); };
    xhr.onerror = () => {
      const err = new ApiError(0, 'unreachable', 'lsqd is unreachable');
      tell(false, err);
      reject(err);
    };
    xhr.onload = () => {
      tell(true);
      let json = null;
      try { json = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch { /* below */ }
      if (xhr.status >= 200 && xhr.status < 300 && json) return resolve(json);
      const e = json && json.error;
      reject(e ? new ApiError(xhr.status, e.code, e.message, e.field)
        : new ApiError(xhr.status, 'http_' + xhr.status, `HTTP ${xhr.status}`));
    };
    xhr.send(file);
  });
}

export const uploadModel = (file, progress) =>
  upload(`/api/v1/models?name=${encodeURIComponent(file.name)}`, file, progress);

// An archive as a dataset: its name (whose extension tells the format) and
// the import options (size, channels, ...) go in the query.
export const uploadDataset = (file, options, progress) => {
  const q = new URLSearchParams({ name: file.name });
  for (const [k, v] of Object.entries(options || {})) q.set(k, String(v));
  return upload(`/api/v1/datasets?${q}`, file, progress);
};
