import type { CephLab } from '../test/lab/ceph-lab.js';
import { startDriver, type CsiClients, type DriverProcess } from '../test/helpers/driver.js';
import { buildGoClient, goClients } from './csi-go.js';

export interface BenchDrivers {
  ctrl: DriverProcess;
  node: DriverProcess;
  c: CsiClients;
  /** Closes the clients, stops both plugins, then the lab. */
  stop(): Promise<void>;
}

/** The two plugins every benchmark measures: a controller and a node ("bench-node"), on the lab's config, logging warnings only; called through grpc-go. */
export async function benchDrivers(lab: CephLab): Promise<BenchDrivers> {
  await buildGoClient();
  const config = lab.writeDriverConfig();
  const ctrl = await startDriver({ config, mode: 'controller', logLevel: 'warn' });
  const node = await startDriver({ config, mode: 'node', nodeId: 'bench-node', logLevel: 'warn' });
  const c = goClients({ controller: ctrl.socket, node: node.socket });
  return {
    ctrl,
    node,
    c,
    async stop() {
      c.close();
      await ctrl.stop();
      await node.stop();
      await lab.stop();
    },
  };
}

/** The driver's side of every detach row: NodeUnpublish, then NodeUnstage, as kubelet calls them. */
export async function unpublishAndUnstage(node: CsiClients['node'], volumeId: string, d: { staging: string; target: string }): Promise<void> {
  await node.NodeUnpublishVolume({ volume_id: volumeId, target_path: d.target });
  await node.NodeUnstageVolume({ volume_id: volumeId, staging_target_path: d.staging });
}
