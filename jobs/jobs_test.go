package jobs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metal-stream/metal/internal/localcluster"
	"github.com/metal-stream/metal/internal/localcluster/clustertest"
	"github.com/metal-stream/metal/jobs"
)

func TestMain(m *testing.M) {
	clustertest.Main(m, clustertest.Options{})
}

// variants are the variable sets each job is validated with: its defaults
// (production) and what `make dev` passes.
var variants = map[string][]map[string]string{
	"gateway.nomad.hcl": {
		{},
		{"driver": "raw_exec", "metal_binary": "/usr/local/bin/metal", "open_mode": "true"},
	},
	"turn.nomad.hcl": {
		{},
		{"driver": "raw_exec", "relay_ip": "198.18.0.1", "port": "13478", "allow": "198.18.0.0/24"},
		{"tls_port": "5349", "tls_name": "turn.example.net"},
	},
	"streamer.nomad.hcl": {
		{"session_id": "0123456789abcdef0123456789abcdef"},
		{"session_id": "abc-1", "driver": "raw_exec", "gpu": "false", "loopback": "true", "resolution": "1920x1080", "fps": "30"},
	},
}

// TestJobsValidate runs the real `nomad job validate` against the real agent
// for every job file and every variant.
func TestJobsValidate(t *testing.T) {
	c := clustertest.Cluster(t)
	bin, err := localcluster.FindBinary("nomad")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range jobs.Names() {
		vs, ok := variants[name]
		if !ok {
			t.Errorf("%s: add its variable sets to the variants table", name)
			continue
		}
		for i, vars := range vs {
			t.Run(name+"/"+string(rune('a'+i)), func(t *testing.T) {
				args := []string{"job", "validate"}
				for k, v := range vars {
					args = append(args, "-var", k+"="+v)
				}
				args = append(args, filepath.Join(".", name))
				cmd := exec.Command(bin, args...)
				cmd.Env = append(os.Environ(), "NOMAD_ADDR="+c.NomadAddr)
				out, err := cmd.CombinedOutput()
				if err != nil || !strings.Contains(string(out), "Job validation successful") {
					t.Fatalf("nomad %s: %v\n%s", strings.Join(args, " "), err, out)
				}
			})
		}
	}
}

// TestJobsRejectBadVariables checks that the jobs' own validation answers a
// bad variable with a clear message.
func TestJobsRejectBadVariables(t *testing.T) {
	c := clustertest.Cluster(t)
	hcl, err := jobs.Read("gateway.nomad.hcl")
	if err != nil {
		t.Fatal(err)
	}
	_, err = localcluster.ParseJob(t.Context(), c.Nomad, hcl, map[string]any{"driver": "qemu"})
	if err == nil || !strings.Contains(err.Error(), `The driver must be \"docker\" or \"raw_exec\"`) && !strings.Contains(err.Error(), `The driver must be "docker" or "raw_exec"`) {
		t.Fatalf("bad driver accepted or unclear: %v", err)
	}
}

func TestStreamerRejectsBadSessionID(t *testing.T) {
	c := clustertest.Cluster(t)
	hcl, err := jobs.Read("streamer.nomad.hcl")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "UPPER", "a_b", "x;rm -rf", strings.Repeat("a", 65)} {
		_, err := localcluster.ParseJob(t.Context(), c.Nomad, hcl, map[string]any{"session_id": id})
		if err == nil || !strings.Contains(err.Error(), "session_id must be") {
			t.Errorf("session_id %q: err = %v, want the validation message", id, err)
		}
	}
	if _, err := localcluster.ParseJob(t.Context(), c.Nomad, hcl, map[string]any{"session_id": "0123456789abcdef0123456789abcdef"}); err != nil {
		t.Errorf("a real session id was refused: %v", err)
	}
}

func TestEveryJobFileIsEmbedded(t *testing.T) {
	files, _ := filepath.Glob("*.nomad.hcl")
	if len(files) == 0 || len(files) != len(jobs.Names()) {
		t.Fatalf("files on disk %v, embedded %v", files, jobs.Names())
	}
}

// TestStreamerGPUConstraint checks the parsed job: with gpu on, the task asks
// for one nvidia/gpu that has an H.264 encoder; with gpu off, for none; and a
// session never restarts or moves.
func TestStreamerGPUConstraint(t *testing.T) {
	c := clustertest.Cluster(t)
	hcl, err := jobs.Read("streamer.nomad.hcl")
	if err != nil {
		t.Fatal(err)
	}
	job, err := localcluster.ParseJob(t.Context(), c.Nomad, hcl, map[string]any{"session_id": "s1"})
	if err != nil {
		t.Fatal(err)
	}
	tg := job.TaskGroups[0]
	devs := tg.Tasks[0].Resources.Devices
	if len(devs) != 1 || devs[0].Name != "nvidia/gpu" || *devs[0].Count != 1 {
		t.Fatalf("devices = %+v, want one nvidia/gpu", devs)
	}
	if cs := devs[0].Constraints; len(cs) != 1 || cs[0].LTarget != "${device.attr.nvenc_h264}" || cs[0].RTarget != "true" {
		t.Fatalf("device constraints = %+v, want nvenc_h264 == true", cs)
	}
	if *tg.RestartPolicy.Attempts != 0 || *tg.ReschedulePolicy.Attempts != 0 || *tg.ReschedulePolicy.Unlimited {
		t.Fatalf("restart %+v reschedule %+v: a session must never restart or move", tg.RestartPolicy, tg.ReschedulePolicy)
	}
	if *job.Type != "batch" {
		t.Fatalf("job type %s, want batch (idle exit 0 completes the job)", *job.Type)
	}
	job, err = localcluster.ParseJob(t.Context(), c.Nomad, hcl, map[string]any{"session_id": "s1", "gpu": false, "driver": "raw_exec"})
	if err != nil {
		t.Fatal(err)
	}
	if d := job.TaskGroups[0].Tasks[0].Resources.Devices; len(d) != 0 {
		t.Fatalf("gpu=false still asks for devices: %+v", d)
	}
	if task := job.TaskGroups[0].Tasks[0]; task.Driver != "raw_exec" || task.Config["command"] != "/usr/local/bin/metal" || task.Config["image"] != nil {
		t.Fatalf("raw_exec task %s config %v", task.Driver, task.Config)
	}
	// The image's entrypoint is metal: the task gives the arguments only
	// (a command would run "metal metal streamer"), on the host's network
	// with an init as PID 1.
	docker := tg.Tasks[0]
	args, _ := docker.Config["args"].([]any)
	if docker.Driver != "docker" || docker.Config["image"] == nil || docker.Config["runtime"] != "nvidia" || docker.Config["command"] != nil ||
		len(args) == 0 || args[0] != "streamer" || docker.Config["network_mode"] != "host" || docker.Config["init"] != true {
		t.Fatalf("docker task %s config %v", docker.Driver, docker.Config)
	}
}

func TestRenderVars(t *testing.T) {
	got, err := jobs.RenderVars(map[string]any{"b": true, "a": "x\"y", "n": 3, "l": []string{"dc1"}})
	if err != nil {
		t.Fatal(err)
	}
	want := "a = \"x\\\"y\"\nb = true\nl = [\"dc1\"]\nn = 3\n"
	if got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}
