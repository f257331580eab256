import type { V1Pod, V1PodSecurityContext, V1Volume } from '@kubernetes/client-node';
import { gone, type KubeApi, type Obj } from './api.js';
import { BUSYBOX_IMAGE } from './images.js';

/** Pods of the lab's busybox image, and what kubelet reports about their volumes. */

export interface PodOptions {
  namespace?: string;
  /** Volumes as in a pod spec, mounted at /<name> in the container. */
  volumes?: V1Volume[];
  securityContext?: V1PodSecurityContext;
  restartPolicy?: 'Never' | 'Always';
  /** mountPropagation of every volume mount (HostToContainer: the container sees later mounts). */
  mountPropagation?: 'None' | 'HostToContainer';
}

/** A pod as created: its name and namespace are always set. */
export type Pod = V1Pod & { metadata: { name: string; namespace: string } };

export function busyboxPod(name: string, script: string, opts: PodOptions = {}): Pod {
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

export const readPod = (api: KubeApi, pod: Pod): Promise<V1Pod> => api.core.readNamespacedPod(pod.metadata);

/** Creates the pod and waits for its phase to be one of `phases`; answers the pod and the wait. */
export async function createAndWait(api: KubeApi, pod: Pod, phases: string[], timeoutMs = 120_000): Promise<{ pod: V1Pod; seconds: number }> {
  const t = Date.now();
  await api.core.createNamespacedPod({ namespace: pod.metadata.namespace, body: pod });
  try {
    const got = await api.waitFor(
      `pod ${pod.metadata.name} ${phases.join(' or ')}`,
      async () => {
        const p = await readPod(api, pod);
        return phases.includes(p.status?.phase ?? '') ? p : undefined;
      },
      timeoutMs,
    );
    return { pod: got, seconds: (Date.now() - t) / 1000 };
  } catch (e) {
    throw new Error(`${(e as Error).message}; its events: ${await podEvents(api, pod)}`);
  }
}

/** What kubelet and the scheduler said about a pod (a failed mount's error from the driver among them). */
async function podEvents(api: KubeApi, pod: Pod): Promise<string> {
  try {
    const list = await api.core.listNamespacedEvent({ namespace: pod.metadata.namespace, fieldSelector: `involvedObject.name=${pod.metadata.name}` });
    return list.items.map((ev) => `${ev.reason}: ${ev.message}`).slice(-6).join(' | ') || 'none';
  } catch (err) {
    return `not readable (${(err as Error).message})`;
  }
}

/** Runs a pod to completion: its phase, its log (through the apiserver's node proxy) and time. */
export async function runToCompletion(api: KubeApi, pod: Pod, timeoutMs = 120_000): Promise<{ phase: string; log: string; seconds: number }> {
  const { pod: done, seconds } = await createAndWait(api, pod, ['Succeeded', 'Failed'], timeoutMs);
  return { phase: done.status!.phase!, log: await podLog(api, pod), seconds };
}

export async function podLog(api: KubeApi, pod: Pod, container = 'main'): Promise<string> {
  return api.core.readNamespacedPodLog({ ...pod.metadata, container });
}

export async function deletePod(api: KubeApi, pod: Pod): Promise<void> {
  await api.core.deleteNamespacedPod({ ...pod.metadata, gracePeriodSeconds: 0 });
}

/**
 * Deletes the pod gracefully and waits until kubelet has torn it down (its volumes unmounted):
 * a forced delete would let the PVC go while kubelet still unstages it.
 */
export async function deletePodAndWait(api: KubeApi, pod: Pod, timeoutMs = 120_000): Promise<void> {
  if (await gone(api.core.deleteNamespacedPod({ ...pod.metadata, gracePeriodSeconds: 1 }))) return;
  await api.waitFor(`pod ${pod.metadata.name} gone`, async () => ((await gone(readPod(api, pod))) ? true : undefined), timeoutMs, 500);
}

/**
 * A pod volume's stats as kubelet reports them (the summary API through the node proxy): what
 * `kubectl describe`, metrics and autoscalers see. Undefined until kubelet has measured it.
 */
export async function volumeStats(api: KubeApi, nodeName: string, pod: Pod, volume: string): Promise<Obj | undefined> {
  const answer: unknown = await api.core.connectGetNodeProxyWithPath({ name: nodeName, path: 'stats/summary' });
  // The summary API is not in the OpenAPI schema: the client types the answer as a string, yet
  // parses it when kubelet answers application/json.
  const summary = (typeof answer === 'string' ? JSON.parse(answer) : answer) as Obj;
  const p = ((summary.pods ?? []) as Obj[]).find((x) => x.podRef?.name === pod.metadata.name && x.podRef?.namespace === pod.metadata.namespace);
  return ((p?.volume ?? []) as Obj[]).find((v) => v.name === volume);
}
