package localcluster

import (
	"fmt"
	"io"
	"strings"

	nomad "github.com/hashicorp/nomad/api"
)

// TaskLogs is what the allocations of job (in namespace ns, "" for the
// client's) say of themselves: task events and the tail of stderr, for a
// failure message.
func TaskLogs(nc *nomad.Client, job, ns string) string {
	allocs, _, err := nc.Jobs().Allocations(job, true, &nomad.QueryOptions{Namespace: ns})
	if err != nil {
		return fmt.Sprintf("allocations of %s: %v", job, err)
	}
	var b strings.Builder
	for _, stub := range allocs {
		fmt.Fprintf(&b, "allocation %s on %s: %s\n", stub.ID[:8], stub.NodeName, stub.ClientStatus)
		for task, st := range stub.TaskStates {
			for _, ev := range st.Events {
				fmt.Fprintf(&b, "  %s: %s %s\n", task, ev.Type, ev.DisplayMessage)
			}
			alloc, _, err := nc.Allocations().Info(stub.ID, &nomad.QueryOptions{Namespace: ns})
			if err != nil {
				continue
			}
			if r, err := nc.AllocFS().Cat(alloc, "alloc/logs/"+task+".stderr.0", nil); err == nil {
				out, _ := io.ReadAll(io.LimitReader(r, 1<<20))
				r.Close()
				if len(out) > 4000 {
					out = out[len(out)-4000:]
				}
				fmt.Fprintf(&b, "  %s stderr:\n%s\n", task, out)
			}
		}
	}
	return b.String()
}
