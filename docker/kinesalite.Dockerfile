# syntax=docker/dockerfile:1
# The Kinesis API for docker-compose: kinesalite from the npm registry, pinned by
# package-lock.json, started by lambdalake/local/kinesalite.js (the launcher `lambdalake up` uses)
# bound to 0.0.0.0 inside the container (compose publishes it on 127.0.0.1 only). The entry point
# creates the event and DLQ streams (LAMBDALAKE_STREAM_NAME, LAMBDALAKE_DLQ_STREAM_NAME,
# LAMBDALAKE_STREAM_SHARDS), as `lambdalake up` does locally. Build from the repository root:
#   docker build -f docker/kinesalite.Dockerfile -t lambdalake-kinesalite .
FROM node:20.18.1-bookworm-slim
WORKDIR /opt/kinesalite
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error \
    && mkdir -p /data \
    && chown node:node /data
COPY lambdalake/local/kinesalite.js ./kinesalite.js
COPY docker/kinesalite/entrypoint.js ./entrypoint.js
ENV KINESALITE_HOST=0.0.0.0 \
    KINESALITE_PORT=4567 \
    KINESALITE_DATA=/data
USER node
EXPOSE 4567
CMD ["node", "entrypoint.js"]
