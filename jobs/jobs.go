// Package jobs embeds Metal's Nomad job specifications so that `metal dev`,
// the gateway and the tests register exactly the files operators run with
// `nomad job run jobs/*.nomad.hcl`. It holds no logic beyond reading them
// and rendering their variables.
package jobs

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

//go:embed *.nomad.hcl
var files embed.FS

// Names lists the embedded job files, sorted.
func Names() []string {
	entries, _ := fs.ReadDir(files, ".")
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// Read returns the HCL of one job file, for example "gateway.nomad.hcl".
func Read(name string) (string, error) {
	b, err := files.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("job file %s: %w", name, err)
	}
	return string(b), nil
}

// RenderVars renders HCL2 job variables as the content of a variables file
// (Nomad's JobsParseRequest.Variables). JSON literals are valid HCL for
// strings, numbers, bools and lists.
func RenderVars(vars map[string]any) (string, error) {
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
