import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { CephLab } from '../lab/ceph-lab.js';
import { codeOf, connect, startDriver, type CsiClients, type DriverProcess } from '../helpers/driver.js';
import { retry } from '../crash/harness.js';
import { MiB, mountCap } from '../helpers/volumes.js';

/**
 * A watch whose client is killed while the OSD registers it is kept by a
 * Pacific OSD with no timeout at all (Ceph bug 58120, fixed in 17.2.8 and
 * 18.2.5): `rbd status` lists it for good, blocklisting its client does not
 * remove it, and `rbd rm` refuses the image for good. The crash test met it
 * (a controller killed inside an image open). Here it is made on purpose:
 * clients that open the volume's image in a loop are killed at random
 * instants until one leaves such a watch, which is told from an ordinary
 * dead client's watch by surviving its client's blocklisting. DeleteVolume
 * must still converge, and quickly: the driver makes the OSD read the
 * header's watches afresh, which drops a blocklisted client's at once.
 */

const execFileP = promisify(execFile);

// Prints the instance id of the client whose watch was left, after it survived its blocklisting.
const MAKER = String.raw`
import json, random, subprocess, sys, threading, time
import rados, rbd
conf, pool, image, workers, budget = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
CHILD = """
import sys, rados, rbd
c = rados.Rados(conffile=sys.argv[1]); c.connect()
io = c.open_ioctx(sys.argv[2])
sys.stdout.write("%d\\n" % c.get_instance_id()); sys.stdout.flush()
while True:
    with rbd.Image(io, sys.argv[3]):
        pass
"""
c = rados.Rados(conffile=conf); c.connect()
io = c.open_ioctx(pool)
def watch_of(client):
    with rbd.Image(io, image, read_only=True) as im:
        return [w["addr"] for w in im.watchers_list() if w["id"] == client]
found, kills, end = [], [0], time.time() + budget
def worker():
    while not found and time.time() < end:
        p = subprocess.Popen([sys.executable, "-c", CHILD, conf, pool, image], stdout=subprocess.PIPE)
        client = int(p.stdout.readline())
        time.sleep(random.random() * 0.03)
        p.kill(); p.wait()
        kills[0] += 1
        left = watch_of(client)
        if not left:
            continue
        for a in left:
            c.mon_command(json.dumps({"prefix": "osd blocklist", "blocklistop": "add", "addr": a, "expire": 600.0}), b"")
        time.sleep(1)
        if watch_of(client):
            found.extend(left)
threads = [threading.Thread(target=worker) for _ in range(workers)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"stale": found, "kills": kills[0]}))
`;

describe('rbd: a watch the OSD keeps without a timeout (Ceph bug 58120)', { timeout: 300_000 }, () => {
  let lab: CephLab;
  let d: DriverProcess;
  let c: CsiClients;

  before(async () => {
    lab = await CephLab.start({ components: ['rbd'] });
    d = await startDriver({ config: lab.writeDriverConfig() });
    c = connect(d.socket);
  });

  after(async () => {
    c?.close();
    await d?.stop();
    await lab?.stop();
  });

  it('DeleteVolume converges on an image such a watch holds', async () => {
    const secrets = { userID: 'admin', userKey: lab.adminKey };
    const v = (await c.controller.CreateVolume({ name: 'stale-watch', capacity_range: { required_bytes: 16 * MiB }, volume_capabilities: [mountCap()], parameters: { backend: 'rbd', clusterID: 'lab', pool: 'rbd' }, secrets }))!.volume!;
    const image = v.volume_id!.split(':').at(-1)!;
    const made = JSON.parse((await execFileP('/usr/bin/python3', ['-c', MAKER, lab.conf, 'rbd', image, '8', '150'], { timeout: 180_000 })).stdout) as { stale: string[]; kills: number };
    assert.ok(made.stale.length > 0, `a watch outlived its blocklisted client (${made.kills} clients killed)`);
    const status = () => lab.rbd(['status', `rbd/${image}`]);
    for (const addr of made.stale) assert.match(await status(), new RegExp(addr.replace(/[./]/g, '\\$&')), 'the watch is still listed');

    const t0 = Date.now();
    const r = await retry(() => c.controller.DeleteVolume({ volume_id: v.volume_id!, secrets }), 60_000);
    const took = Date.now() - t0;
    console.log(`stale watches ${made.stale.join(', ')} (after ${made.kills} kills); DeleteVolume converged in ${took} ms after ${r.retries} retries (${r.codes.join(',')})`);
    assert.ok(took < 30_000, `a blocklisted client's stale watch goes at once once the OSD reads it afresh (took ${took} ms)`);
    await assert.rejects(status(), /No such file|does not exist|not found/i, 'the image is gone');
    await assert.rejects(c.controller.ControllerGetVolume({ volume_id: v.volume_id! }), (e) => codeOf(e) === 'NOT_FOUND');
  });
});
