# One image for every worker and the CLI; docker-compose.yml picks the entry point.
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
COPY packages ./packages
COPY services ./services
RUN npm ci --omit=dev --ignore-scripts=false && npm install --no-save tsx
COPY schemas ./schemas
COPY infra ./infra
USER node
