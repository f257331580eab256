import type { KubeApi, Obj } from './api.js';
import { BUSYBOX_IMAGE } from './images.js';

/** Pods of the lab's busybox image, and what kubelet reports about their volumes. */

export interface PodOptions {
  namespace?: string;
  /** Volumes as in a pod spec, mounted at /<name> in the container. */
  volumes?: Obj[];
  securityContext?: Obj;
  restartPolicy?: 'Never' | 'Always';
  /** mountPropagation of every volume mount (HostToContainer: the container sees later mounts). */
  mountPropagation?: 'None' | 'HostToContainer';
}

export function busyboxPod(name: string, script: string, opts: PodOptions = {}): Obj {
  const volumes = opts.volumes ?? [];
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: opts.namespace ?? 'default' },
    spec: {
      restartPolicy: opts.restartPolicy ?? 'Never',
      ...(opts.securityContext ? { securityContext: opts.securityContext } : {}),
      volumes,
      containers: [
        {
          name: 'main',
          image: BUSYBOX_IMAGE,
          imagePullPolicy: 'Never',
          command: ['sh', '-c', script],
          volumeMounts: volumes.map((v) => ({ name: v.name, mountPath: `/${v.name}`, ...(opts.mountPropagation ? { mountPropagation: opts.mountPropagation } : {}) })),
        },
      ],
    },
  };
}

const podPath = (pod: Obj) => `/api/v1/namespaces/${pod.metadata.namespace ?? 'default'}/pods`;

/** Creates the pod and waits for its phase to be one of `phases`; answers the pod and the wait. */
export async function createAndWait(api: KubeApi, pod: Obj, phases: string[], timeoutMs = 120_000): Promise<{ pod: Obj; seconds: number }> {
  const t = Date.now();
  await api.create(podPath(pod), pod);
  const got = await api.waitFor(
    `pod ${pod.metadata.name} ${phases.join(' or ')}`,
    async () => {
      const p = await api.get(`${podPath(pod)}/${pod.metadata.name}`);
      return phases.includes(p.status?.phase) ? p : undefined;
    },
    timeoutMs,
  );
  return { pod: got, seconds: (Date.now() - t) / 1000 };
}

/** Runs a pod to completion: its phase, its log (through the apiserver's node proxy) and time. */
export async function runToCompletion(api: KubeApi, pod: Obj, timeoutMs = 120_000): Promise<{ phase: string; log: string; seconds: number }> {
  const { pod: done, seconds } = await createAndWait(api, pod, ['Succeeded', 'Failed'], timeoutMs);
  return { phase: done.status.phase, log: await podLog(api, pod), seconds };
}

export async function podLog(api: KubeApi, pod: Obj, container = 'main'): Promise<string> {
  return (await api.raw('GET', `${podPath(pod)}/${pod.metadata.name}/log?container=${container}`)).text;
}

export async function deletePod(api: KubeApi, pod: Obj): Promise<void> {
  await api.delete(`${podPath(pod)}/${pod.metadata.name}`, { gracePeriodSeconds: 0 });
}

/**
 * Deletes the pod gracefully and waits until kubelet has torn it down (its volumes unmounted):
 * a forced delete would let the PVC go while kubelet still unstages it.
 */
export async function deletePodAndWait(api: KubeApi, pod: Obj, timeoutMs = 120_000): Promise<void> {
  const p = `${podPath(pod)}/${pod.metadata.name}`;
  await api.delete(p, { gracePeriodSeconds: 1 });
  await api.waitFor(`pod ${pod.metadata.name} gone`, async () => ((await api.raw('GET', p)).status === 404 ? true : undefined), timeoutMs, 500);
}

/**
 * A pod volume's stats as kubelet reports them (the summary API through the node proxy): what
 * `kubectl describe`, metrics and autoscalers see. Undefined until kubelet has measured it.
 */
export async function volumeStats(api: KubeApi, nodeName: string, pod: Obj, volume: string): Promise<Obj | undefined> {
  const summary = await api.get(`/api/v1/nodes/${nodeName}/proxy/stats/summary`);
  const p = ((summary.pods ?? []) as Obj[]).find((x) => x.podRef?.name === pod.metadata.name && x.podRef?.namespace === (pod.metadata.namespace ?? 'default'));
  return ((p?.volume ?? []) as Obj[]).find((v) => v.name === volume);
}
