// Package compose tests docker-compose.yml, the file operators run: it is
// loaded and checked with compose-go, and brought up with the real Docker
// Compose, scaled, through its load balancer, with containers killed
// under a chat. The machines that test BuddyTok can pull no image, so
// deploy/compose.test.yaml swaps only the images for ones built here FROM
// scratch (services, nats-server from the module pkg pins, Caddy from the
// module caddy/ pins); everything else comes from the real file.
package compose
