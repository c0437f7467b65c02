package scheduler

import (
	"slices"
	"testing"
)

func TestEdgeOrder(t *testing.T) {
	s := &Scheduler{cfg: Config{Datacenters: []string{"def", "b", "c", "d"}}}
	tests := []struct {
		name        string
		prefs       Prefs
		consulOrder []string
		want        []string
		why         string
	}{
		{"by RTT", Prefs{RTT: map[string]float64{"c": 10, "b": 40, "d": 80}}, nil, []string{"c", "b", "d", "def"}, "lowest measured RTT (c 10 ms)"},
		{"avoid the failed edge", Prefs{RTT: map[string]float64{"c": 10, "b": 40}, Avoid: []string{"c"}}, nil, []string{"b", "def", "d"}, "lowest measured RTT (b 40 ms)"},
		{"no measurements: Consul's order", Prefs{}, []string{"d", "b"}, []string{"d", "b", "def", "c"}, "no measurements: nearest TURN in Consul's order from the gateway's agent"},
		{"nothing known: default first", Prefs{}, nil, []string{"def", "b", "c", "d"}, "default edge (no measurements)"},
		{"avoiding every edge avoids none", Prefs{Avoid: []string{"def", "b", "c", "d"}}, nil, []string{"def", "b", "c", "d"}, "default edge (no measurements)"},
		{"unknown edges in RTT are ignored", Prefs{RTT: map[string]float64{"zz": 1}}, nil, []string{"def", "b", "c", "d"}, "default edge (no measurements)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.consulOrder = tt.consulOrder
			got, why := s.orderLocked(tt.prefs)
			if !slices.Equal(got, tt.want) || why != tt.why {
				t.Fatalf("order = %v (%q), want %v (%q)", got, why, tt.want, tt.why)
			}
		})
	}
}
