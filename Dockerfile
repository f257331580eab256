# syntax=docker/dockerfile:1
# Strata CSI driver: one image for the controller and the node plugin.
# The base is a build argument, so a machine without a registry can build on a local base
# (test/k8s/strata-image.sh makes one from Debian packages and Node's official build).
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
# g++ builds the node plugin's mount addon (native/) against the Node-API headers from npm.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY native ./native
RUN node native/build.mjs
COPY tsconfig.json ./
COPY proto ./proto
COPY src ./src
COPY tsconfig.build.json ./
# Only src/ is compiled: tests, demo and bench stay out of the image.
RUN npx tsc -p tsconfig.build.json

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE}
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/strata-csi/strata
LABEL org.opencontainers.image.title="strata" \
      org.opencontainers.image.description="CSI driver for Ceph RBD, CephFS and S3-compatible object storage" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
# The tools the node plugin runs: krbd/rbd-nbd/rbd-fuse for RBD, the kernel client helper and
# ceph-fuse for CephFS, s3fs/rclone for S3, and what formats, grows and mounts file systems.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ceph-common rbd-nbd rbd-fuse ceph-fuse s3fs rclone fuse3 e2fsprogs xfsprogs util-linux mount kmod ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY --from=build /src/native/build/strata_mount.node ./native/build/
COPY proto ./proto
COPY package.json ./
# A 1 MiB young generation (V8's default is 16) keeps each idle process ~10 MB smaller; the control plane allocates little.
RUN printf '#!/bin/sh\nexec node --max-semi-space-size=1 /app/dist/src/cli.js "$@"\n' > /usr/local/bin/strata && chmod 0755 /usr/local/bin/strata
ENV NODE_ENV=production
# FUSE daemons fork away from the driver and are re-parented to PID 1: tini, as PID 1, reaps
# them (Node reaps only the children it spawned, so under it they would stay zombies).
# Flags (or the matching environment variables) come from the manifests; see `strata serve --help`.
ENTRYPOINT ["tini", "--", "strata", "serve"]
