// Package jobs embeds Metal's Nomad job specifications so that `metal dev`,
// the gateway and the tests register exactly the files operators run with
// `nomad job run jobs/*.nomad.hcl`. It holds no logic beyond reading them.
package jobs

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
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
