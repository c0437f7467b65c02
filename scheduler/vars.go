package scheduler

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// renderVars renders HCL2 job variables as a variables file. JSON literals
// are valid HCL for strings, numbers, bools and lists.
func renderVars(vars map[string]any) (string, error) {
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		v, err := json.Marshal(vars[k])
		if err != nil {
			return "", fmt.Errorf("job variable %s: %w", k, err)
		}
		fmt.Fprintf(&b, "%s = %s\n", k, v)
	}
	return b.String(), nil
}
