# The demo function of examples/kv-test-function, the image the example
# manifests in deploy/k8s run next to kvsidecar. Build from the
# repository's root (it needs the client in client/node):
#
#   make image-example                # or:
#   docker build -f deploy/docker/kv-test-function.Dockerfile -t kvsidecar/kv-test-function:0.1.0 .

ARG NODE_VERSION=20.20.2

FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /src
# The example depends on the client as file:../../client/node, and its
# .npmrc copies it into node_modules (install-links), so the same layout
# is needed here and the result stands alone.
COPY client/node client/node
COPY examples/kv-test-function examples/kv-test-function
RUN cd examples/kv-test-function && npm ci --omit=dev --no-audit --no-fund

FROM node:${NODE_VERSION}-bookworm-slim
WORKDIR /app
COPY --from=build /src/examples/kv-test-function /app
ENV NODE_ENV=production PORT=3000
USER 10001:10001
EXPOSE 3000
ENTRYPOINT ["node", "server.js"]
