// The admin HTTP API (v1) as the page calls it. Every request carries the
// bearer token; errors become ApiError with the API's code and message.

// The page is served at <base>/ and the API at <base>/api/v1/, so the API is
// found relative to the page wherever it is mounted.
const base = new URL('api/v1/', document.baseURI);

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body; // the whole error document, e.g. {"error":…, "imported":N}
  }
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  url(path, query) {
    const u = new URL(path.replace(/^\//, ''), base);
    for (const [k, v] of Object.entries(query || {})) {
      if (v !== undefined && v !== null) u.searchParams.set(k, String(v));
    }
    return u;
  }

  headers(extra) {
    return { Authorization: `Bearer ${this.token}`, ...extra };
  }

  // request sends one call and returns the response, having turned an error
  // status into an ApiError. body is a string (sent as it is) or a value to JSON-encode.
  async request(method, path, { query, body } = {}) {
    const init = { method, headers: this.headers(), cache: 'no-store' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(this.url(path, query), init);
    } catch (err) {
      throw new ApiError(0, 'network', `cannot reach the admin API: ${err.message}`);
    }
    if (!res.ok) throw await errorOf(res);
    return res;
  }

  async json(method, path, opts) {
    const res = await this.request(method, path, opts);
    return res.json();
  }

  // text returns the response body as text, for callers that must read JSON
  // without losing precision (values with integers beyond 2^53).
  async text(method, path, opts) {
    const res = await this.request(method, path, opts);
    return res.text();
  }

  project(name) {
    return `projects/${encodeURIComponent(name)}`;
  }

  whoami() { return this.json('GET', 'whoami'); }
  projects(cursor, limit) { return this.json('GET', 'projects', { query: { cursor, limit } }); }
  settings() { return this.json('GET', 'settings'); }
  putSettings(defaultQuota) { return this.json('PUT', 'settings', { body: { default_quota_bytes: defaultQuota } }); }
  setQuota(p, quota) { return this.json('PUT', `${this.project(p)}/quota`, { body: { quota_bytes: quota } }); }
  usage(p) { return this.json('GET', `${this.project(p)}/usage`); }
  prefixes(p, delimiter, limit) { return this.json('GET', `${this.project(p)}/prefixes`, { query: { delimiter, limit } }); }
  largest(p, limit) { return this.json('GET', `${this.project(p)}/largest`, { query: { limit } }); }
  keys(p, { prefix, search, cursor, limit }) {
    return this.json('GET', `${this.project(p)}/keys`, {
      query: { prefix: prefix || undefined, search: search || undefined, cursor: cursor || undefined, limit },
    });
  }
  entryText(p, key) { return this.text('GET', `${this.project(p)}/entry`, { query: { key } }); }
  putEntry(p, key, bodyText) { return this.json('PUT', `${this.project(p)}/entry`, { query: { key }, body: bodyText }); }
  deleteEntry(p, key) { return this.json('DELETE', `${this.project(p)}/entry`, { query: { key } }); }
  deleteMatching(p, prefix, search, dryRun) {
    return this.json('POST', `${this.project(p)}/delete-matching`, { body: { prefix, search, dry_run: dryRun } });
  }
  clear(p, confirm) { return this.json('POST', `${this.project(p)}/clear`, { body: { confirm } }); }
  exportResponse(p) { return this.request('GET', `${this.project(p)}/export`); }

  // importFile uploads file with XMLHttpRequest, the one browser API that
  // reports upload progress: onProgress(sentBytes, totalBytes).
  importFile(p, file, { replace, dryRun }, onProgress) {
    const url = this.url(`${this.project(p)}/import`, { replace: !!replace, dry_run: !!dryRun });
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', url);
      xhr.setRequestHeader('Authorization', `Bearer ${this.token}`);
      xhr.setRequestHeader('Content-Type', 'application/json');
      xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
      xhr.onerror = () => reject(new ApiError(0, 'network', 'the upload failed: the admin API could not be reached'));
      xhr.onload = () => {
        let doc = null;
        try {
          doc = JSON.parse(xhr.responseText);
        } catch {
          // not JSON: reported below
        }
        if (xhr.status >= 200 && xhr.status < 300 && doc) {
          resolve(doc);
          return;
        }
        reject(errorFromDoc(xhr.status, doc, xhr.responseText));
      };
      xhr.send(file);
    });
  }
}

async function errorOf(res) {
  const text = await res.text().catch(() => '');
  let doc = null;
  try {
    doc = JSON.parse(text);
  } catch {
    // not JSON
  }
  return errorFromDoc(res.status, doc, text);
}

function errorFromDoc(status, doc, text) {
  if (doc && doc.error && typeof doc.error.message === 'string') {
    return new ApiError(status, doc.error.code || 'error', doc.error.message, doc);
  }
  const what = text ? `: ${text.slice(0, 200)}` : '';
  return new ApiError(status, 'http', `the admin API answered HTTP ${status}${what}`, doc);
}
