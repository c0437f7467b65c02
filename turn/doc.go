// Package turn is Metal's TURN relay (RFC 8656) for one edge, built on
// pion/turn v3: UDP and TCP listeners, TURN REST credentials compatible with
// coturn's use-auth-secret, and a peer filter so that a relay can never be
// used to reach into the cluster (loopback, private, CGNAT, link-local and
// metadata addresses, multicast, and their IPv6-mapped forms), plus
// per-allocation bandwidth and lifetime caps and a cap on allocations.
//
// It is not a general TURN server: no long-term user database, no TLS
// listener yet, and relays only to the streamers' networks when configured.
package turn
