import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import pino from 'pino';
import type { NodeBackend } from '../../src/backends/types.js';
import { Healer } from '../../src/node/healer.js';
import { encodeId } from '../../src/csi/ids.js';
import { KeyedTryLock } from '../../src/csi/locks.js';
import { StageRecords } from '../../src/node/stage-records.js';
import type * as csi from '../../src/csi/types.js';

const log = pino({ level: 'silent' });
const volumeId = encodeId({ kind: 'v', backend: 'rbd', cluster: 'lab', location: ['rbd', `csi-vol-${'a'.repeat(32)}`] });

/** A node with one kernel stage of a fencing backend whose ownership answers come from `answers` (values, or promises), in turn. */
function nodeWith(answers: Array<boolean | Error | Promise<boolean>>) {
  const records = new StageRecords(mkdtempSync(path.join(tmpdir(), 'strata-heal-')));
  records.staged({ volume_id: volumeId, staging_target_path: '/nonexistent/staging', secrets: {}, publish_context: {}, volume_context: {} } as unknown as csi.NodeStageVolumeRequest, false, true);
  let asked = 0;
  let unstaged = 0;
  const backend = {
    owned: async () => {
      const a = answers[Math.min(asked++, answers.length - 1)]!;
      if (a instanceof Error) throw a;
      return a;
    },
    unstage: async () => {
      unstaged++;
    },
  } as unknown as NodeBackend;
  const locks = new KeyedTryLock();
  const healer = new Healer(locks, { rbd: backend }, records, log);
  return { healer, locks, records, asked: () => asked, unstaged: () => unstaged };
}

describe('healer passes', () => {
  it('at interval 0, passes once when every volume is settled', async () => {
    const n = nodeWith([true]);
    n.healer.start(0, 20);
    await sleep(200);
    n.healer.stop();
    assert.equal(n.asked(), 1);
  });

  it('at interval 0, passes again soon after a volume it could not finish, and stops once it could', async () => {
    const n = nodeWith([new Error('monitors do not answer'), new Error('monitors do not answer'), true]);
    n.healer.start(0, 20);
    await sleep(300);
    n.healer.stop();
    assert.equal(n.asked(), 3);
  });

  it('a fenced volume whose lock kubelet holds is released once kubelet is done, not at the next interval', async () => {
    const n = nodeWith([false]);
    const release = n.locks.tryAcquire([volumeId])!;
    n.healer.start(60_000, 20);
    await sleep(100);
    assert.equal(n.unstaged(), 0, 'nothing done while kubelet holds the volume');
    release();
    await sleep(100);
    n.healer.stop();
    assert.equal(n.unstaged(), 1);
    assert.equal(n.records.all().length, 0);
  });

  it('asks whether a volume is still this node\'s without its lock: kubelet is never turned away while a slow cluster answers', async () => {
    let answer!: (owned: boolean) => void;
    const n = nodeWith([new Promise<boolean>((resolve) => (answer = resolve))]);
    n.healer.start(0, 20);
    await sleep(50);
    assert.equal(n.asked(), 1, 'the healer is waiting on the cluster');
    const kubelet = n.locks.tryAcquire([volumeId]);
    assert.ok(kubelet, "kubelet's call takes the volume's lock while the healer waits");
    kubelet();
    answer(true);
    await sleep(50);
    n.healer.stop();
    assert.equal(n.unstaged(), 0);
    assert.equal(n.records.all().length, 1);
  });
});
