// The REST API of lsqd, as used by the dashboard. Every call resolves to the
// decoded JSON or throws an ApiError: {status, code, message, field}. A
// network failure (lsqd unreachable) is status 0, code "unreachable".
//
// When lsqd asks for a token (401), the dashboard asks the user for one once,
// keeps it in this tab's sessionStorage and sends it as a bearer on every
// call; the events stream, which EventSource opens without headers, gets it
// as ?access_token= (docs/security.md).

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

const TOKEN_KEY = 'lsqd.token';
export function token() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}
function authHeaders(headers) {
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  return headers;
}
// One question at a time, however many calls got a 401 together.
let asking = null;
function askToken(message) {
  if (!asking) {
    asking = Promise.resolve().then(() => {
      const t = window.prompt(`${message}\n\nlsqd needs an access token (lsqd token create); it is kept for this tab only:`);
      if (t && t.trim()) sessionStorage.setItem(TOKEN_KEY, t.trim());
      return Boolean(t && t.trim());
    }).finally(() => { setTimeout(() => { asking = null; }, 0); });
  }
  return asking;
}

export async function request(method, path, body, retried = false) {
  const init = { method, headers: authHeaders({}) };
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
  if (res.status === 401 && !retried) {
    let msg = 'lsqd asks for a token.';
    try { msg = (await res.clone().json()).error.message || msg; } catch { /* keep msg */ }
    sessionStorage.removeItem(TOKEN_KEY);
    if (await askToken(msg)) return request(method, path, body, true);
  }
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
  eventsUrl: (id) => (token()
    ? `/api/v1/jobs/${id}/events?access_token=${encodeURIComponent(token())}`
    : `/api/v1/jobs/${id}/events`),
  artifactUrl: (id, name) => `/api/v1/jobs/${id}/artifacts/${encodeURIComponent(name)}`,
};

// A file of the API (an artifact, samples.png) as an object URL, fetched
// with the token: an <a href> or <img src> cannot send it. Caller revokes.
export async function blobUrl(path) {
  const res = await fetch(path, { headers: authHeaders({}) });
  if (!res.ok) throw new ApiError(res.status, 'http_' + res.status, `HTTP ${res.status}`);
  return URL.createObjectURL(await res.blob());
}

// Saves a file of the API as name (with the token).
export async function download(path, name) {
  const url = await blobUrl(path);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

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
    if (token()) xhr.setRequestHeader('Authorization', `Bearer ${token()}`);
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
