// Package caddy pins the Caddy load balancer that the compose test builds
// into a FROM-scratch image (no image can be pulled on the machines that
// test BuddyTok). It holds no code: go.mod names Caddy as a tool, so that
// `GOWORK=off go build github.com/caddyserver/caddy/v2/cmd/caddy` here
// builds the pinned version. It is not in go.work, so Caddy's many
// dependencies never enter BuddyTok's own builds.
package caddy
