# One image for every worker and the CLI; docker-compose.yml picks the entry point.
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
COPY packages ./packages
COPY services ./services
# `npm install`, not `npm ci`: chdb lists per-platform optional packages that the registry does
# not serve for other platforms, which `npm ci` refuses as an out-of-sync lock file (see .ci/run).
# tsx is a runtime dependency (the services run from their TypeScript sources). node-rdkafka is
# optional and needs a compiler this slim image lacks: the workers run on kafkajs and say so.
RUN npm install --omit=dev --no-audit --no-fund && npm cache clean --force
COPY schemas ./schemas
COPY infra ./infra
USER node
