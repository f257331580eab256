import { KubeLab } from './lab.js';

/**
 * The Kubernetes lab by hand, for debugging:
 *   node dist/test/k8s/lab-cli.js up [--csi]   starts a lab and keeps it until Ctrl-C (or SIGTERM)
 *   node dist/test/k8s/lab-cli.js stop-stale   stops a lab whose test process died
 * With `up`, `KUBECONFIG=<printed path> kubectl ...` works (build kubectl with `build.sh kubectl`).
 */

const [cmd, ...args] = process.argv.slice(2);
const log = (m: string) => console.log(`[k8s-lab] ${m}`);
if (cmd === 'up') {
  const lab = await KubeLab.start({ csi: args.includes('--csi'), log });
  log(`kubeconfig: ${lab.kubeconfig}`);
  log(`containerd: ctr --address ${lab.containerdSocket} -n k8s.io ...; logs in ${lab.p('log')}`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    log('stopping');
    await lab.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
  setInterval(() => {}, 1 << 30);
} else if (cmd === 'stop-stale') {
  log((await KubeLab.stopStale(log)) ? 'stopped' : 'no stale lab');
} else {
  console.error('usage: lab-cli.js up [--csi] | stop-stale');
  process.exit(2);
}
