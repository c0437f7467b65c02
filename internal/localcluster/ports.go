package localcluster

import (
	"fmt"
	"net"
)

// FreePorts asks the kernel for n distinct free TCP ports on 127.0.0.1 that
// are also free for UDP (Serf gossips on both, and so does TURN).
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var hold []net.Listener
	defer func() {
		for _, l := range hold {
			l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find free port: %w", err)
		}
		hold = append(hold, l)
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		u.Close()
		ports = append(ports, port)
	}
	return ports, nil
}

// agentPorts returns n ports: free ones on this machine's loopback, or the
// agents' well-known defaults inside a network namespace (or container) of
// the agents' own, or on an address of their own.
func agentPorts(o Options, n int, defaults ...int) ([]int, error) {
	if o.Netns != "" || o.Container != "" || o.WellKnownPorts {
		return defaults[:n], nil
	}
	return FreePorts(n)
}
