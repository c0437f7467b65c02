package localcluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// FindBinary locates an agent binary: $METAL_<NAME>_BIN first, then the
// project's bin/ directory (searched upwards from the working directory),
// then $PATH.
func FindBinary(name string) (string, error) {
	env := "METAL_" + upper(name) + "_BIN"
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", env, p, ErrBinaryNotFound)
		}
		return p, nil
	}
	if dir, err := os.Getwd(); err == nil {
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				p := filepath.Join(dir, "bin", name)
				if _, err := os.Stat(p); err == nil {
					return p, nil
				}
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s (set %s or run `make tools`): %w", name, env, ErrBinaryNotFound)
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
