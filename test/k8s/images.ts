import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, createReadStream, existsSync, mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { run } from '../../src/util/exec.js';

/**
 * One-layer container images built from local files, as docker-archive tars that
 * `ctr images import` takes: no image registry is reachable from the test machines.
 */

export interface ImageSpec {
  /** The reference pods use, e.g. strata.local/busybox:lab (with imagePullPolicy: Never). */
  ref: string;
  /** Fills the image's root file system (an empty directory). */
  populate: (rootfs: string) => Promise<void> | void;
  entrypoint?: string[];
  cmd?: string[];
  env?: string[];
}

export const PAUSE_IMAGE = 'strata.local/pause:lab';
export const BUSYBOX_IMAGE = 'strata.local/busybox:lab';

async function sha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * Builds the image under workDir and returns the docker-archive tar's path. With `reuse`, a tar
 * built before is taken as it is (for refs whose tag names their content, such as a version).
 */
export async function buildImage(workDir: string, spec: ImageSpec, opts: { reuse?: boolean } = {}): Promise<string> {
  const base = path.join(workDir, spec.ref.replace(/[^A-Za-z0-9.-]/g, '_'));
  const tar = `${base}.tar`;
  if (opts.reuse && existsSync(tar)) return tar;
  rmSync(base, { recursive: true, force: true });
  const rootfs = path.join(base, 'rootfs');
  const archive = path.join(base, 'archive');
  mkdirSync(rootfs, { recursive: true });
  mkdirSync(archive, { recursive: true });
  await spec.populate(rootfs);
  const layer = path.join(archive, 'layer.tar');
  // Owned by root whoever builds it, with fixed times: the same files give the same image id.
  await run('tar', ['--numeric-owner', '--owner=0', '--group=0', '--mtime=@0', '--sort=name', '-C', rootfs, '-cf', layer, '.'], { timeoutMs: 60_000 });
  const config = {
    architecture: 'amd64',
    os: 'linux',
    created: '1970-01-01T00:00:00Z',
    config: {
      Env: spec.env ?? ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      ...(spec.entrypoint ? { Entrypoint: spec.entrypoint } : {}),
      ...(spec.cmd ? { Cmd: spec.cmd } : {}),
      WorkingDir: '/',
    },
    rootfs: { type: 'layers', diff_ids: [`sha256:${await sha256(layer)}`] },
    history: [{ created: '1970-01-01T00:00:00Z', created_by: 'strata test/k8s/images.ts' }],
  };
  writeFileSync(path.join(archive, 'config.json'), JSON.stringify(config));
  writeFileSync(path.join(archive, 'manifest.json'), JSON.stringify([{ Config: 'config.json', RepoTags: [spec.ref], Layers: ['layer.tar'] }]));
  await run('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', archive, '-cf', `${tar}.tmp`, 'manifest.json', 'config.json', 'layer.tar'], { timeoutMs: 60_000 });
  renameSync(`${tar}.tmp`, tar);
  rmSync(base, { recursive: true, force: true });
  return tar;
}

/** An image of one static binary at /<name>, its entrypoint (the CSI sidecars, the stand-ins). */
export function binaryImage(ref: string, binary: string): ImageSpec {
  const name = path.basename(binary);
  return {
    ref,
    populate: (rootfs) => {
      mkdirSync(path.join(rootfs, 'tmp'), { mode: 0o1777 });
      copyFileSync(binary, path.join(rootfs, name));
      chmodSync(path.join(rootfs, name), 0o755);
    },
    entrypoint: [`/${name}`],
  };
}

/** The pod sandbox image: the static pause binary built by build.sh. */
export function pauseImage(pauseBinary: string): ImageSpec {
  return {
    ref: PAUSE_IMAGE,
    populate: (rootfs) => {
      copyFileSync(pauseBinary, path.join(rootfs, 'pause'));
      chmodSync(path.join(rootfs, 'pause'), 0o755);
    },
    entrypoint: ['/pause'],
  };
}

/**
 * The app image: Debian's static busybox with its applets, a writable /tmp and an unprivileged
 * user (uid 1000, "app") for non-root pods.
 */
export function busyboxImage(busybox = '/bin/busybox'): ImageSpec {
  return {
    ref: BUSYBOX_IMAGE,
    populate: async (rootfs) => {
      for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'tmp', 'root', 'home/app', 'proc', 'sys', 'dev', 'data']) mkdirSync(path.join(rootfs, d), { recursive: true });
      chmodSync(path.join(rootfs, 'tmp'), 0o1777);
      copyFileSync(busybox, path.join(rootfs, 'bin/busybox'));
      chmodSync(path.join(rootfs, 'bin/busybox'), 0o755);
      const applets = (await run(busybox, ['--list-full'])).stdout.split('\n').filter((l) => /^[a-z/]+\/[A-Za-z0-9_.[\]-]+$/.test(l));
      for (const a of applets) {
        if (a === 'bin/busybox') continue;
        const link = path.join(rootfs, a);
        mkdirSync(path.dirname(link), { recursive: true });
        try {
          symlinkSync('/bin/busybox', link);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        }
      }
      writeFileSync(path.join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
      writeFileSync(path.join(rootfs, 'etc/group'), 'root:x:0:\napp:x:1000:\nnogroup:x:65534:\n');
    },
    cmd: ['sh'],
  };
}
