import * as k8s from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * The tests' Kubernetes client: @kubernetes/client-node's typed APIs on the lab's admin
 * kubeconfig. Answers are the library's objects, never kubectl output.
 */

/** A custom resource (VolumeSnapshot and its kin) or a manifest read from YAML. */
export type Obj = Record<string, any>;

interface Apis {
  core: k8s.CoreV1Api;
  storage: k8s.StorageV1Api;
  custom: k8s.CustomObjectsApi;
  crds: k8s.ApiextensionsV1Api;
  version: k8s.VersionApi;
  health: k8s.Health;
}

/** A request's own bound: a check in waitFor must not hang past its deadline. */
const REQUEST_TIMEOUT_MS = 30_000;

export class KubeApi {
  private apis: Apis | undefined;

  /** The kubeconfig is read at the first request: the lab writes it after making its client. */
  constructor(readonly kubeconfig: string) {}

  private get a(): Apis {
    if (!this.apis) {
      const kc = new k8s.KubeConfig();
      kc.loadFromFile(this.kubeconfig);
      this.apis = {
        core: kc.makeApiClient(k8s.CoreV1Api),
        storage: kc.makeApiClient(k8s.StorageV1Api),
        custom: kc.makeApiClient(k8s.CustomObjectsApi),
        crds: kc.makeApiClient(k8s.ApiextensionsV1Api),
        version: kc.makeApiClient(k8s.VersionApi),
        health: new k8s.Health(kc),
      };
    }
    return this.apis;
  }
  get core(): k8s.CoreV1Api {
    return this.a.core;
  }
  get storage(): k8s.StorageV1Api {
    return this.a.storage;
  }
  get custom(): k8s.CustomObjectsApi {
    return this.a.custom;
  }
  get crds(): k8s.ApiextensionsV1Api {
    return this.a.crds;
  }
  get version(): k8s.VersionApi {
    return this.a.version;
  }

  async ready(): Promise<boolean> {
    return this.a.health.readyz({ timeout: 5000 });
  }

  /** Polls until check returns a value (not undefined), or fails with what it last saw. */
  async waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 60_000, everyMs = 200): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        const v = await bounded(check(), Math.min(REQUEST_TIMEOUT_MS, Math.max(1000, deadline - Date.now())));
        if (v !== undefined) return v;
      } catch (e) {
        last = e;
      }
      await sleep(everyMs);
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${message(last)}` : ''}`);
  }
}

async function bounded<T>(p: Promise<T>, ms: number): Promise<T> {
  const ac = new AbortController();
  try {
    return await Promise.race([p, sleep(ms, undefined, { signal: ac.signal }).then(() => Promise.reject(new Error(`no answer in ${ms} ms`)))]);
  } finally {
    ac.abort();
  }
}

export const isNotFound = (e: unknown): boolean => e instanceof k8s.ApiException && e.code === 404;

/** Deletes in cleanup must be idempotent: an object already gone is not an error. */
export async function ignoreNotFound(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
}

/** True once the read answers 404 (the object is gone). */
export async function gone(p: Promise<unknown>): Promise<boolean> {
  try {
    await p;
    return false;
  } catch (e) {
    if (isNotFound(e)) return true;
    throw e;
  }
}

/** The API server's message of a failed call (ApiException's own message holds the whole body). */
export function message(e: unknown): string {
  if (e instanceof k8s.ApiException) return `HTTP ${e.code}: ${String(typeof e.body === 'string' ? e.body : JSON.stringify(e.body)).slice(0, 400)}`;
  return (e as Error).message;
}

/** A JSON merge patch (the client's default for patch calls is a JSON patch). */
export const MERGE_PATCH = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);

export const SNAPSHOT_GROUP = { group: 'snapshot.storage.k8s.io', version: 'v1' } as const;
