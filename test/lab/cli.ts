import { CephLab, type Component } from './ceph-lab.js';

/**
 * `node dist/test/lab/cli.js up [rbd,cephfs,s3]`: boots a lab and keeps it
 * running until SIGINT/SIGTERM, printing its directory and config. For poking
 * at the driver by hand; tests start their own labs.
 */
const components = (process.argv[3] ?? 'rbd,cephfs,s3').split(',') as Component[];
const lab = await CephLab.start({ components, log: (m) => console.error(m) });
console.log(JSON.stringify({ dir: lab.dir, conf: lab.conf, driverConfig: lab.writeDriverConfig() }));
const stop = async () => {
  await lab.stop();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
setInterval(() => {}, 1 << 30);
