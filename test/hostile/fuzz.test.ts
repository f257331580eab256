import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CephLab } from '../lab/ceph-lab.js';
import { codeOf, connect, retryAborted, startDriver, type CsiClients, type DriverProcess } from '../helpers/driver.js';
import { BACKENDS, hostileRequests, seedFrom, type Backend, type FuzzContext } from './fuzz-gen.js';
import {
  PARAMS,
  cephLeftovers,
  checkFiles,
  detachPremade,
  deleteListed,
  diffMaps,
  diffSets,
  failureReport,
  labSecrets,
  makeSentinels,
  outsideMounts,
  premade,
  reattachAndCheck,
  removeSentinels,
  runFuzz,
  sentinelListing,
  tallies,
  undoMade,
  type FuzzResult,
  type Premade,
  type Sentinels,
} from './fuzz-run.js';

/**
 * Issue 16's fuzz test: at least 10,000 malformed and hostile requests, from
 * a seeded generator (test/hostile/fuzz-gen.ts), over every RPC of Identity,
 * Controller and Node and every backend, sent 16 at a time to the real driver
 * on a real Ceph lab with RBD, CephFS and S3. The driver must stay up and
 * answer Probe; no answer may be INTERNAL or UNKNOWN; where the spec gives a
 * code for a request's defect, the answer must be it; nothing outside the
 * paths a request named (sentinel files, directories and a tmpfs mount) may
 * change; no secret may reach the log or an answer; and the volumes made
 * before the fuzzing (one per backend, staged, published and written) keep
 * their data and delete without a trace.
 *
 * Reproduce with STRATA_FUZZ_SEED=<seed> (printed at the start).
 */

const SEED = seedFrom(process.env.STRATA_FUZZ_SEED, 16);
const COUNT = Math.max(10_000, Number(process.env.STRATA_FUZZ_COUNT ?? 0));
const CONCURRENCY = 16;
const DEADLINE_MS = 30_000;
const NODE_ID = 'node-a';

describe(`fuzz: ${COUNT} hostile requests over every RPC and backend (seed ${SEED})`, { timeout: 1_200_000 }, () => {
  let lab: CephLab;
  let drv: DriverProcess;
  let c: CsiClients;
  let sentinels: Sentinels | undefined;
  let secrets: Record<Backend, Record<string, string>>;
  const premades: Partial<Record<Backend, Premade>> = {};
  let ctx: FuzzContext;
  let result: FuzzResult | undefined;
  let listingBefore: Map<string, string>;
  let mountsBefore: Set<string>;
  const marker = `STRATAFUZZSECRET${randomBytes(6).toString('hex')}`;

  before(async () => {
    console.log(`fuzz seed ${SEED} (set STRATA_FUZZ_SEED to repeat), ${COUNT} requests, ${CONCURRENCY} at a time`);
    lab = await CephLab.start({ components: ['rbd', 'cephfs', 's3'] });
    drv = await startDriver({ config: lab.writeDriverConfig(), nodeId: NODE_ID, mode: 'all', logLevel: 'info' });
    c = connect(drv.socket);
    secrets = labSecrets(lab);
    sentinels = makeSentinels(drv.dir);
    mkdirSync(path.join(drv.dir, 'fuzz'), { recursive: true });
    for (const b of BACKENDS) premades[b] = await premade(c, drv, NODE_ID, b, secrets[b]);
    ctx = { nodeId: NODE_ID, sandbox: drv.dir, sentinels, volumes: premades, secrets, params: PARAMS, secretMarker: marker };
    listingBefore = sentinelListing(sentinels);
    mountsBefore = await outsideMounts(drv.dir, sentinels);
  });

  after(async () => {
    c?.close();
    await drv?.stop();
    await removeSentinels(sentinels);
    await lab?.stop();
  });

  it('the driver stays up through every request and answers Probe', async () => {
    result = await runFuzz(drv.socket, hostileRequests(SEED, ctx, COUNT), { concurrency: CONCURRENCY, deadlineMs: DEADLINE_MS, secretMarker: marker, ctx });
    for (const line of tallies(result)) console.log(line);
    assert.equal(result.sent, COUNT);
    assert.equal(drv.child.exitCode, null, `the driver exited (${drv.child.exitCode}); see ${drv.logFile}`);
    const probe = await c.identity.Probe({});
    assert.equal(probe!.ready?.value, true, 'Probe answers ready after the fuzzing');
  });

  it('answers every request with the code the CSI spec gives, never INTERNAL or UNKNOWN', () => {
    assert.ok(result, 'the fuzzing ran');
    const f = result.failures;
    // Every failure, for a closer look than the report's examples.
    if (process.env.STRATA_FUZZ_FAILURES) writeFileSync(process.env.STRATA_FUZZ_FAILURES, JSON.stringify(f, null, 1));
    assert.equal(f.length, 0, `seed ${SEED}: ${f.length} of ${result.sent} answers break the rules:\n${failureReport(f)}`);
  });

  it('touches no file, directory or mount outside the paths the requests named', async () => {
    const files = diffMaps(listingBefore, sentinelListing(sentinels!));
    const mounts = diffSets(mountsBefore, await outsideMounts(drv.dir, sentinels!));
    assert.deepEqual([...files, ...mounts], [], `seed ${SEED}: sentinels changed`);
  });

  it('keeps every secret out of the log', () => {
    const log = readFileSync(drv.logFile, 'utf8');
    const lines = log.split('\n').filter((l) => l.includes(marker) || l.includes(lab.adminKey) || l.includes(secrets.s3.secretAccessKey!));
    assert.deepEqual(lines.map((l) => l.slice(0, 300)), [], `seed ${SEED}: secrets in ${drv.logFile}`);
  });

  it('the volumes made before keep their data, stay readable and delete without a trace', async () => {
    const problems: string[] = [];
    for (const b of BACKENDS) {
      const p = premades[b]!;
      problems.push(...checkFiles(p));
      try {
        const got = (await c.controller.ControllerGetVolume({ volume_id: p.id }))!;
        if (JSON.stringify(got.status?.published_node_ids) !== JSON.stringify([NODE_ID])) problems.push(`${b}: published to ${JSON.stringify(got.status?.published_node_ids)}`);
        if (got.status?.volume_condition?.abnormal) problems.push(`${b}: abnormal: ${got.status.volume_condition.message}`);
        await c.controller.GetSnapshot({ snapshot_id: p.snapshotId, secrets: secrets[b] });
      } catch (e) {
        problems.push(`${b}: ${codeOf(e)} ${(e as Error).message}`);
      }
    }
    // Issue 16 case 6: the CephFS volume's metadata survived (getxattr errors meant it had not).
    const subvolume = premades.cephfs!.id.split(':').pop()!;
    const info = await lab.cephAllowFail(['fs', 'subvolume', 'info', 'cephfs', subvolume, '--group_name', 'csi']);
    if (info.exitCode !== 0) problems.push(`ceph fs subvolume info ${subvolume}: ${info.stderr.trim()}`);
    const image = premades.rbd!.id.split(':').pop()!;
    const rbdInfo = await lab.rbd(['info', `rbd/${image}`, '--format', 'json']).catch((e: Error) => `failed: ${e.message}`);
    if (rbdInfo.startsWith('failed')) problems.push(`rbd info ${image}: ${rbdInfo}`);

    if (result) problems.push(...(await undoMade(c, result, secrets)).map((x) => `cleanup of what the fuzz made: ${x}`));
    const keep = new Set(BACKENDS.flatMap((b) => [premades[b]!.id, premades[b]!.snapshotId]));
    try {
      const lost = await deleteListed(c, keep, secrets);
      if (lost.length) console.log(`deleted ${lost.length} objects the fuzz made without seeing the answer: ${lost.join(' ')}`);
    } catch (e) {
      problems.push(`listing and deleting what the fuzz made: ${codeOf(e)} ${(e as Error).message}`);
    }
    for (const b of BACKENDS) {
      const p = premades[b]!;
      try {
        await detachPremade(c, NODE_ID, p, secrets[b]);
        problems.push(...(await reattachAndCheck(c, drv, NODE_ID, p, secrets[b])).map((x) => `after a fresh stage: ${x}`));
        await retryAborted(() => c.controller.DeleteSnapshot({ snapshot_id: p.snapshotId, secrets: secrets[b] }));
        await retryAborted(() => c.controller.DeleteVolume({ volume_id: p.id, secrets: secrets[b] }));
      } catch (e) {
        problems.push(`${b}: ${codeOf(e)} ${(e as Error).message}`);
      }
    }
    problems.push(...(await cephLeftovers(lab)).map((x) => `left in the cluster: ${x}`));
    assert.deepEqual(problems, [], `seed ${SEED}`);
  });
});
