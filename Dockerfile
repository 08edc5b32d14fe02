# syntax=docker/dockerfile:1
# BuddyTok's images, one target per program, from the Go workspace:
#   docker build --target edge -t buddytok/edge .
# (presence, invites, tokens, edge, and buddytok: the all-in-one). Each is
# a static binary (CGO_ENABLED=0) on an empty image, run as a non-root user;
# `PROGRAM probe URL` is its health check, as the image has no shell.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Each program builds from its own module (GOWORK=off: its go.mod names
# everything it needs), so the test modules' dependencies are never
# fetched. The module and build caches persist between builds.
COPY . .
ENV CGO_ENABLED=0 GOWORK=off
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    for m in services/presence services/invites services/tokens services/edge cmd/buddytok; do \
      (cd "$m" && go build -trimpath -ldflags="-s -w" -o /out/ .) || exit 1; \
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
