import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { runAllowFail } from '../../src/util/exec.js';

/**
 * Runs csi-sanity (kubernetes-csi/csi-test v5) against a running driver and
 * returns its counts. Specs we skip on purpose are listed with the reason;
 * csi-sanity's own capability-based skips are explained in SELF_SKIPPED.
 */

/** Where `go install` put it (test/install-deps.sh): GOPATH's bin, which need not be ~/go. */
function goBin(): string | undefined {
  try {
    return path.join(execFileSync('go', ['env', 'GOPATH'], { encoding: 'utf8', timeout: 10_000 }).trim(), 'bin', 'csi-sanity');
  } catch {
    return undefined;
  }
}

export const SANITY_BIN = [process.env.CSI_SANITY, goBin(), path.join(homedir(), 'go/bin/csi-sanity'), '/usr/local/bin/csi-sanity'].find(
  (p): p is string => !!p && existsSync(p),
);

/** Specs skipped by us, each with the reason. */
export const SKIPPED_BY_US: Record<string, string> = {
  'should fail when the node does not exist':
    'Strata keeps no registry of node ids: any id NodeGetInfo may return is accepted by ControllerPublish. ' +
    'In Kubernetes the external-attacher only publishes to nodes with a CSINode object, so the check belongs there.',
};

/** Specs csi-sanity skips itself because Strata does not advertise the capability, and why we don't. */
export const SELF_SKIPPED: Record<string, string> = {
  'ModifyVolume / volume attribute class': 'MODIFY_VOLUME is not advertised: no backend has mutable parameters yet.',
  'GroupController Service': 'GROUP_CONTROLLER_SERVICE (group snapshots) is not implemented yet.',
  'ControllerGetVolumeHealth, ControllerListVolumeHealth, NodeGetVolumeHealth, NodeGetStorageHealth':
    'These are CSI v1.13 alpha RPCs; Strata speaks v1.12 and reports health through VOLUME_CONDITION (ControllerGetVolume, ListVolumes, NodeGetVolumeStats).',
  'snapshot with accessibility requirements': 'SNAPSHOT_ACCESSIBILITY_CONSTRAINTS is a v1.13 capability, beyond v1.12.',
  'single node multi writer': 'SINGLE_NODE_MULTI_WRITER (alpha) is not advertised.',
  'node max attach limit': 'Runs only with --csi.testnodevolumeattachlimit; Strata sets no per-node volume limit by default.',
};

export interface SanityResult {
  passed: number;
  failed: number;
  skipped: number;
  pending: number;
  failures: string[];
  output: string;
}

export interface SanityOptions {
  socket: string;
  workDir: string;
  params: Record<string, string>;
  secrets: Record<string, string>;
  accessType: 'mount' | 'block';
  volumeSize?: number;
  expandSize?: number;
  timeoutMs?: number;
}

const SECRET_KEYS = [
  'CreateVolumeSecret', 'DeleteVolumeSecret', 'ControllerPublishVolumeSecret', 'ControllerUnpublishVolumeSecret',
  'ControllerValidateVolumeCapabilitiesSecret', 'NodeStageVolumeSecret', 'NodePublishVolumeSecret', 'CreateSnapshotSecret',
  'DeleteSnapshotSecret', 'ControllerExpandVolumeSecret', 'NodeExpandVolumeSecret', 'ListSnapshotsSecret', 'GetSnapshotSecret',
  'ControllerModifyVolumeSecret',
];

function yamlMap(m: Record<string, string>, indent = ''): string {
  return Object.entries(m).map(([k, v]) => `${indent}${k}: ${JSON.stringify(v)}`).join('\n') + '\n';
}

/** Each "[FAILED]" line of ginkgo's report with the lines that follow it (the spec, the error, where). */
function failureBlocks(output: string): string {
  const lines = output.split('\n');
  return lines.flatMap((l, i) => (l.includes('[FAILED]') ? [...lines.slice(Math.max(0, i - 3), i + 25), '---'] : [])).join('\n').slice(0, 12_000);
}

export async function runSanity(o: SanityOptions): Promise<SanityResult> {
  if (!SANITY_BIN) throw new Error('csi-sanity not found: run test/install-deps.sh (go install github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity)');
  mkdirSync(o.workDir, { recursive: true });
  const paramsFile = path.join(o.workDir, 'params.yaml');
  const secretsFile = path.join(o.workDir, 'secrets.yaml');
  writeFileSync(paramsFile, yamlMap(o.params));
  writeFileSync(secretsFile, SECRET_KEYS.map((k) => `${k}:\n${yamlMap(o.secrets, '  ')}`).join(''), { mode: 0o600 });
  const args = [
    '--csi.endpoint', o.socket,
    '--csi.testvolumeparameters', paramsFile,
    '--csi.secrets', secretsFile,
    '--csi.stagingdir', path.join(o.workDir, 'staging'),
    '--csi.mountdir', path.join(o.workDir, 'mount'),
    '--csi.testvolumesize', String(o.volumeSize ?? 64 * 1024 * 1024),
    '--csi.testvolumeexpandsize', String(o.expandSize ?? 128 * 1024 * 1024),
    '--csi.testvolumeaccesstype', o.accessType,
    '--ginkgo.skip', Object.keys(SKIPPED_BY_US).join('|'),
    '--ginkgo.no-color',
  ];
  const r = await runAllowFail(SANITY_BIN, args, { timeoutMs: o.timeoutMs ?? 600_000 });
  const output = r.stdout + '\n' + r.stderr;
  const m = /(\d+) Passed \| (\d+) Failed \| (\d+) Pending \| (\d+) Skipped/.exec(output);
  if (!m) throw new Error(`csi-sanity printed no summary (exit ${r.exitCode}):\n${output.slice(-3000)}`);
  const failures = [...output.matchAll(/^\s+\[FAIL\] (.*)$/gm)].map((x) => x[1]!.trim());
  // Printed as test comments too: a CI log that keeps only part of the output keeps the reasons near the failing test's name.
  if (+m[2]! > 0) console.log(`csi-sanity failures (${o.accessType}):\n${failureBlocks(output)}`);
  return { passed: +m[1]!, failed: +m[2]!, pending: +m[3]!, skipped: +m[4]!, failures, output };
}

/**
 * Runs `body` against a second driver whose config has no default identity, as the README allows
 * and as Kubernetes passes credentials (request secrets only): the listing RPCs that carry no secrets
 * are then not advertised, and csi-sanity skips their specs.
 */
export async function withoutDefaultIdentity<T>(
  start: () => Promise<{ socket: string; dir: string; stop(): Promise<void> }>,
  body: (d: { socket: string; dir: string }) => Promise<T>,
): Promise<T> {
  const d = await start();
  try {
    return await body(d);
  } finally {
    await d.stop();
  }
}

/** Fewer specs run without a default identity (ListVolumes, GetCapacity and ControllerGetVolume are skipped). */
export const MIN_PASSED = { withIdentity: 60, secretsOnly: 45 };

