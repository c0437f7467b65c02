package flagenv

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func TestParsePrecedence(t *testing.T) {
	env := map[string]string{"METAL_LISTEN": "127.0.0.1:9", "METAL_MAX_SESSIONS": "7"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	tests := []struct {
		name       string
		args       []string
		wantListen string
		wantMax    int
	}{
		{"env fills unset flags", nil, "127.0.0.1:9", 7},
		{"flag wins over env", []string{"-listen", ":1"}, ":1", 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			listen := fs.String("listen", ":8080", "")
			max := fs.Int("max-sessions", 1, "")
			if err := parse(fs, tt.args, lookup); err != nil {
				t.Fatal(err)
			}
			if *listen != tt.wantListen || *max != tt.wantMax {
				t.Fatalf("got listen=%q max=%d, want %q %d", *listen, *max, tt.wantListen, tt.wantMax)
			}
		})
	}
}

func TestParseInvalidEnvNamesFlag(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Int("max-sessions", 1, "")
	err := parse(fs, nil, func(string) (string, bool) { return "many", true })
	if err == nil || !strings.Contains(err.Error(), "METAL_MAX_SESSIONS") || !strings.Contains(err.Error(), "-max-sessions") {
		t.Fatalf("error %v does not name the variable and the flag", err)
	}
}
