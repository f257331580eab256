import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType } from './gen/csi.js';

/** Loads proto/csi.proto with the options the generated types assume. */

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

// The code runs from dist/src/csi; the proto stays at the package root.
function protoDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(path.join(dir, 'proto', 'csi.proto'))) return path.join(dir, 'proto');
    dir = path.dirname(dir);
  }
  throw new Error('proto/csi.proto not found above ' + fileURLToPath(import.meta.url));
}

let cached: ProtoGrpcType | undefined;

export function loadCsi(): ProtoGrpcType {
  if (!cached) {
    const def = protoLoader.loadSync('csi.proto', { ...LOADER_OPTIONS, includeDirs: [protoDir()] });
    cached = grpc.loadPackageDefinition(def) as unknown as ProtoGrpcType;
  }
  return cached;
}
