# syntax=docker/dockerfile:1
# BuddyTok's images, one target per program, from the Go workspace:
#   docker build --target edge -t buddytok/edge .
# (presence, invites, tokens, edge, and buddytok: the all-in-one). Each is
# a static binary (CGO_ENABLED=0) on an empty image, run as a non-root user;
# `PROGRAM probe URL` is its health check, as the image has no shell.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so that a change of code does not download them again.
COPY go.work go.work.sum ./
COPY pkg/go.mod pkg/go.sum pkg/
COPY web/go.mod web/
COPY services/presence/go.mod services/presence/go.sum services/presence/
COPY services/invites/go.mod services/invites/go.sum services/invites/
COPY services/tokens/go.mod services/tokens/go.sum services/tokens/
COPY services/edge/go.mod services/edge/go.sum services/edge/
COPY cmd/buddytok/go.mod cmd/buddytok/go.sum cmd/buddytok/
COPY test/cluster/go.mod test/cluster/go.sum test/cluster/
COPY test/compose/go.mod test/compose/go.sum test/compose/
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY . .
ENV CGO_ENABLED=0
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    for p in services/presence services/invites services/tokens services/edge cmd/buddytok; do \
      go build -trimpath -ldflags="-s -w" -o /out/ ./$p || exit 1; \
    done

# The runtime: nothing but CA certificates (OpenTok is reached over HTTPS)
# and one binary, as user 65532.
FROM scratch AS runtime
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 65532:65532

FROM runtime AS presence
COPY --from=build /out/presence /usr/local/bin/presence
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/presence"]

FROM runtime AS invites
COPY --from=build /out/invites /usr/local/bin/invites
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/invites"]

FROM runtime AS tokens
COPY --from=build /out/tokens /usr/local/bin/tokens
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/tokens"]

FROM runtime AS edge
COPY --from=build /out/edge /usr/local/bin/edge
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/edge"]

FROM runtime AS buddytok
COPY --from=build /out/buddytok /usr/local/bin/buddytok
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/buddytok"]
