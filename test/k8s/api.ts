import { request } from 'node:https';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A minimal Kubernetes API client over node:https with the lab's admin client certificate, until
 * the tests take a client library (@kubernetes/client-node). Answers are parsed JSON, never
 * kubectl output.
 */

export interface Credentials {
  server: string;
  ca: string;
  cert: string;
  key: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly method: string,
    readonly path: string,
    readonly body: string,
  ) {
    super(`${method} ${path}: HTTP ${status}: ${body.slice(0, 400)}`);
    this.name = 'ApiError';
  }
}

/** A Kubernetes object or list as JSON: the tests read the fields they assert on. */
export type Obj = Record<string, any>;

export class KubeApi {
  private tlsFiles: { ca: Buffer; cert: Buffer; key: Buffer } | undefined;

  /** The files are read at the first request: the lab writes them after making its client. */
  constructor(readonly creds: Credentials) {}

  private get tls(): { ca: Buffer; cert: Buffer; key: Buffer } {
    this.tlsFiles ??= { ca: readFileSync(this.creds.ca), cert: readFileSync(this.creds.cert), key: readFileSync(this.creds.key) };
    return this.tlsFiles;
  }

  async raw(method: string, path: string, body?: unknown, opts: { timeoutMs?: number; contentType?: string } = {}): Promise<{ status: number; text: string }> {
    const url = new URL(path, this.creds.server);
    const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          ...this.tls,
          headers: {
            accept: 'application/json',
            ...(data === undefined ? {} : { 'content-type': opts.contentType ?? 'application/json', 'content-length': Buffer.byteLength(data) }),
          },
          timeout: opts.timeoutMs ?? 30_000,
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
      req.on('error', reject);
      if (data !== undefined) req.write(data);
      req.end();
    });
  }

  async call(method: string, path: string, body?: unknown, contentType?: string): Promise<Obj> {
    const res = await this.raw(method, path, body, { contentType });
    if (res.status < 200 || res.status >= 300) throw new ApiError(res.status, method, path, res.text);
    return res.text ? (JSON.parse(res.text) as Obj) : {};
  }

  get(path: string): Promise<Obj> {
    return this.call('GET', path);
  }
  create(path: string, body: Obj): Promise<Obj> {
    return this.call('POST', path, body);
  }
  /** Deletes; a missing object is not an error (deletes must be idempotent in cleanup). */
  async delete(path: string, opts: { gracePeriodSeconds?: number } = {}): Promise<void> {
    const q = opts.gracePeriodSeconds === undefined ? '' : `?gracePeriodSeconds=${opts.gracePeriodSeconds}`;
    const res = await this.raw('DELETE', path + q);
    if (res.status !== 404 && (res.status < 200 || res.status >= 300)) throw new ApiError(res.status, 'DELETE', path, res.text);
  }
  patch(path: string, body: Obj): Promise<Obj> {
    return this.call('PATCH', path, body, 'application/merge-patch+json');
  }

  /** Polls until check returns a value (not undefined), or fails with what it last saw. */
  async waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 60_000, everyMs = 200): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        const v = await check();
        if (v !== undefined) return v;
      } catch (e) {
        last = e;
      }
      await sleep(everyMs);
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
  }
}
