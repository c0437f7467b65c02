// Package docker runs Metal on Nomad's docker driver from its images
// (`make images`): `metal dev -driver docker` end to end.
//
// It is apart from package e2e because it cannot run in a private network
// namespace: a container with host networking lives in the Docker
// engine's namespace, the host's, so the agents, the gateway and
// Chromium must be there too. Everything listens on 127.0.0.1 (metal dev),
// and the streamers gather ICE candidates on lo only.
package docker
