// Package scheduler turns player sessions into Nomad jobs and back: it
// queues sessions in Consul KV, places one streamer job per session through
// nomad/api when capacity allows, follows Nomad's event stream and Consul's
// health to derive each session's state, and stops and purges jobs when a
// session ends.
//
// All of its state lives in Nomad (jobs, allocations, variables) and Consul
// (KV records, service health), so a restarted gateway picks up every
// session where it was. It does not speak HTTP to players; the gateway does.
package scheduler
