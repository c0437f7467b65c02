package scheduler

import "time"

// State is where a session is in its life.
type State string

// Session states, in order.
const (
	StateQueued    State = "queued"    // waiting for capacity; Position says where
	StatePlacing   State = "placing"   // job registered, Nomad is choosing a node
	StateStarting  State = "starting"  // allocation on a node, streamer not healthy yet
	StateReady     State = "ready"     // streamer healthy in Consul, nobody connected
	StateConnected State = "connected" // a browser is connected
	StateEnded     State = "ended"     // stopped by the player, the reaper or idle exit
	StateFailed    State = "failed"    // Reason says why
)

// Terminal reports whether s is final.
func (s State) Terminal() bool { return s == StateEnded || s == StateFailed }

// Reasons a player can read.
const (
	ReasonWaitingGPU      = "waiting for a GPU"
	ReasonNodeLost        = "node lost"
	ReasonStreamerCrashed = "streamer crashed"
	ReasonStopped         = "stopped"
	ReasonIdle            = "no browser connected"
	ReasonStreamerExited  = "streamer exited"
	ReasonEdgeLost        = "edge lost: streamer unreachable"
	ReasonUnhealthy       = "edge lost: streamer health check critical"
)

// record is what Consul KV holds for a session (metal/sessions/<id>).
type record struct {
	ID      string    `json:"id"`
	Player  string    `json:"player"`
	Created time.Time `json:"created"`
	Placed  bool      `json:"placed"`
	// Ended and Reason are set once the session is over; the record stays a
	// while so that a player polling its status sees why.
	Ended      bool      `json:"ended,omitempty"`
	Failed     bool      `json:"failed,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	EndedAt    time.Time `json:"ended_at,omitempty"`
	Datacenter string    `json:"datacenter,omitempty"`
	// RTT are the player's measured round trips by edge (ms), Prefs the edge
	// order derived from them, Choice why the edge was chosen, Avoid edges
	// that failed this player.
	RTT    map[string]float64 `json:"rtt,omitempty"`
	Prefs  []string           `json:"prefs,omitempty"`
	Choice string             `json:"choice,omitempty"`
	Avoid  []string           `json:"avoid,omitempty"`
	// Replacement is the session a failover created for this one; Replaces
	// is the failed session this one replaces.
	Replacement string `json:"replacement,omitempty"`
	Replaces    string `json:"replaces,omitempty"`

	// createIndex orders the queue; modifyIndex is the version in KV that
	// this copy reflects (check-and-set writes name it).
	createIndex uint64
	modifyIndex uint64
	// In memory only: the registration index of the session's job (older
	// evaluations are not about it), and for a session Nomad refused, the
	// registration it refused, the room generation it was refused at, when
	// to try regardless, how often it was refused (until an allocation
	// lands), and whether its job is still being purged.
	jobIndex     uint64
	refusedIndex uint64
	refusedGen   uint64
	retryAt      time.Time
	refusals     int
	purging      bool
	// purgedIndex is the Nomad index at which this gateway last purged the
	// session's job: an allocation created at or before it belongs to that
	// registration, whatever happens to the session since.
	purgedIndex uint64
	placedAt    time.Time // when the sweep first saw it placed without a job
	placeStart  time.Time // when the leader reserved its slot (placement latency)
	creating    bool      // in the view, not stored yet (admission in flight)
	purged      bool      // this gateway saw its job purged
}

// holdBack counts one more refusal of r and keeps it from being placed
// until its backoff (2 s doubling to 30 s) passes or some edge's room grows
// past gen; it returns the wait.
func (r *record) holdBack(gen uint64, now time.Time) time.Duration {
	r.refusals++
	r.refusedGen = gen
	wait := min(requeueBackoffMin<<min(r.refusals-1, 4), requeueBackoffMax)
	r.retryAt = now.Add(wait)
	return wait
}

// keepLocal carries this gateway's in-memory bookkeeping from old to r
// (a newer version of the same record read from KV).
func (r *record) keepLocal(old *record) {
	r.jobIndex, r.refusedIndex, r.refusedGen = old.jobIndex, old.refusedIndex, old.refusedGen
	r.retryAt, r.refusals, r.purging, r.placedAt = old.retryAt, old.refusals, old.purging, old.placedAt
	r.placeStart, r.purged, r.purgedIndex = old.placeStart, old.purged, old.purgedIndex
}

// Endpoint is a healthy streamer as Consul reports it.
type Endpoint struct {
	Address string
	Port    int
	Node    string
	Encoder string
	Peers   int
}

// Status is a session as the gateway shows it.
type Status struct {
	ID         string    `json:"id"`
	Player     string    `json:"player"`
	State      State     `json:"state"`
	Position   int       `json:"position,omitempty"` // 1-based, while queued
	Reason     string    `json:"reason,omitempty"`
	Created    time.Time `json:"created"`
	Datacenter string    `json:"datacenter,omitempty"`
	Node       string    `json:"node,omitempty"`
	Encoder    string    `json:"encoder,omitempty"`
	// RTT are the player's measurements (ms by edge) and Choice why the edge
	// was chosen.
	RTT    map[string]float64 `json:"rtt,omitempty"`
	Choice string             `json:"choice,omitempty"`
	// Replacement is set on a session that failed over to a new one.
	Replacement string `json:"replacement,omitempty"`
	Replaces    string `json:"replaces,omitempty"`
	// Endpoint is set while ready or connected.
	Endpoint *Endpoint `json:"-"`
}
