// Package localcluster starts real Consul and Nomad agents on loopback for
// `metal dev` and for tests, waits until they are ready, and stops them by PID.
//
// The agents are the same binaries operators run (built by tools/), configured
// for a closed network: update checks off, cloud fingerprinters denied, every
// listener on 127.0.0.1. It is not a production deployment helper: one server
// and one client in a single Nomad agent, one Consul server.
package localcluster
