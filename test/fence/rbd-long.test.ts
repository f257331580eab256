import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { CephLab } from '../lab/ceph-lab.js';
import { connect, startDriver, type CsiClients, type DriverProcess } from '../helpers/driver.js';
import { leftovers } from '../helpers/leftovers.js';
import { MiB, attach, detach, mountCap } from '../helpers/volumes.js';
import { blocklist, clientRecordOf, fusePids, imageMeta, imageOf, restartAndRelease, syncWrite, watchers } from './helpers.js';

/**
 * A node that stays fenced for 10 minutes (FENCE_MINUTES to change it): far
 * past the 30 s watch timeout, the MDS/librbd defaults and the 5-minute
 * windows of Ceph's own clients. Node A's rbd-fuse is frozen, fenced and
 * replaced by node B, which writes every minute; A thaws only at the end,
 * and nothing it then writes is acknowledged or reaches the cluster.
 */

const MINUTES = Number(process.env.FENCE_MINUTES ?? 10);
const RWO = mountCap('ext4');

// Ten minutes of waiting would take the test command's cached run past its 40-minute budget: opt in.
const LONG = process.env.STRATA_LONG_TESTS === '1';

describe(`rbd: a node fenced for ${MINUTES} minutes stays fenced`, { timeout: (MINUTES + 8) * 60_000, skip: !LONG && 'a 10-minute soak: run with STRATA_LONG_TESTS=1 (test/run-all.sh passes it through)' }, () => {
  let lab: CephLab;
  let ctrl: DriverProcess;
  let a: DriverProcess;
  let b: DriverProcess;
  let cc: CsiClients;
  let ca: CsiClients;
  let cb: CsiClients;
  let secrets: Record<string, string>;

  before(async () => {
    lab = await CephLab.start({ components: ['rbd'] });
    const config = lab.writeDriverConfig();
    ctrl = await startDriver({ config, mode: 'controller' });
    a = await startDriver({ config, mode: 'node', nodeId: 'node-a', args: ['--heal-interval', '0'] });
    b = await startDriver({ config, mode: 'node', nodeId: 'node-b' });
    cc = connect(ctrl.socket);
    ca = { ...connect(a.socket), controller: cc.controller };
    cb = { ...connect(b.socket), controller: cc.controller };
    secrets = { userID: 'admin', userKey: lab.adminKey };
  });

  after(async () => {
    for (const p of fusePids(a?.dir ?? '/nonexistent')) process.kill(p, 'SIGCONT');
    cc?.close();
    ca?.close();
    cb?.close();
    await a?.stop();
    await b?.stop();
    await ctrl?.stop();
    await lab?.stop();
  });

  it('the fenced node writes nothing after thawing, and its restarted plugin lets the volume go', async (t) => {
    const vol = (await cc.controller.CreateVolume({ name: 'fence-long', capacity_range: { required_bytes: 64 * MiB }, volume_capabilities: [RWO], parameters: { backend: 'rbd', clusterID: 'lab', pool: 'rbd' }, secrets }))!.volume!;
    const image = imageOf(vol.volume_id!);
    const attA = await attach(ca, vol, 'node-a', path.join(a.dir, 'long'), RWO, secrets);
    assert.ok(syncWrite(path.join(attA.target, 'a.txt'), 'a, before').ok);
    const addr = clientRecordOf(await imageMeta(lab, image), 'node-a')!.addrs[0]!;
    const [pid] = fusePids(a.dir, /rbd-fuse$/);
    process.kill(pid!, 'SIGSTOP');
    let attB!: { staging: string; target: string };
    try {
      await cc.controller.ControllerUnpublishVolume({ volume_id: vol.volume_id!, node_id: 'node-a', secrets });
      attB = await attach(cb, vol, 'node-b', path.join(b.dir, 'long'), RWO, secrets);
      const end = Date.now() + MINUTES * 60_000;
      for (let minute = 0; Date.now() < end; minute++) {
        const w = syncWrite(path.join(attB.target, 'b.txt'), `b, minute ${minute}`);
        assert.ok(w.ok, w.detail);
        assert.ok((await blocklist(lab)).has(addr), `minute ${minute}: node-a still blocklisted`);
        assert.deepEqual(await watchers(lab, image), clientRecordOf(await imageMeta(lab, image), 'node-b')!.addrs);
        await sleep(Math.min(60_000, Math.max(0, end - Date.now())));
      }
    } finally {
      process.kill(pid!, 'SIGCONT');
    }
    // Thawed after the whole time: every write fails; a minute later it still does.
    for (let i = 0; i < 2; i++) {
      const late = syncWrite(path.join(attA.target, `late-${i}.txt`), 'a, after the fence');
      assert.equal(late.ok, false, `write ${i} from the thawed node was acknowledged`);
      t.diagnostic(`thawed node-a, write ${i}: ${late.detail}`);
      if (i === 0) await sleep(60_000);
    }
    assert.equal(syncWrite(path.join(attB.target, 'b.txt'), 'b, last').ok, true);

    ca.close();
    a = await restartAndRelease(a, lab.writeDriverConfig(), 'node-a', path.join(a.dir, 'long'), () => fusePids(a.dir, /rbd-fuse$/).length === 0);
    ca = { ...connect(a.socket), controller: cc.controller };
    assert.match(readFileSync(a.logFile, 'utf8'), /volume released/);

    await detach(cb, vol.volume_id!, 'node-b', attB, secrets);
    const check = await attach(cb, vol, 'node-b', path.join(b.dir, 'long-check'), RWO, secrets);
    assert.deepEqual(readdirSync(check.target).filter((f) => f !== 'lost+found').sort(), ['a.txt', 'b.txt']);
    assert.equal(readFileSync(path.join(check.target, 'b.txt'), 'utf8'), 'b, last');
    assert.equal(readFileSync(path.join(check.target, 'a.txt'), 'utf8'), 'a, before');
    await detach(cb, vol.volume_id!, 'node-b', check, secrets);
    await cc.controller.DeleteVolume({ volume_id: vol.volume_id!, secrets });
    assert.deepEqual(await leftovers(a.dir), []);
    assert.deepEqual(await leftovers(b.dir), []);
  });
});
