// Package gateway is the player-facing HTTP service (echo v4): player links,
// admission, the progress stream and the player page. It places sessions
// through a small Placer interface and never talks to Nomad directly.
//
// It is not the streamer: media flows from the streamer to the browser over
// WebRTC and never through the gateway.
package gateway
