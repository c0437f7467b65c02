package localcluster

import (
	"context"
	"fmt"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/metal-stream/metal/jobs"
)

// ParseJob parses an HCL2 jobspec with variables through Nomad's own parser
// (/v1/jobs/parse), so what is registered is exactly what `nomad job run`
// would register.
func ParseJob(ctx context.Context, c *nomad.Client, hcl string, vars map[string]any) (*nomad.Job, error) {
	v, err := jobs.RenderVars(vars)
	if err != nil {
		return nil, err
	}
	job, err := c.Jobs().ParseHCLOpts(&nomad.JobsParseRequest{JobHCL: hcl, Variables: v, Canonicalize: true})
	if err != nil {
		return nil, fmt.Errorf("parse job: %w", err)
	}
	return job, nil
}

// RunJob parses and registers a jobspec, like `nomad job run -var ...`.
func RunJob(ctx context.Context, c *nomad.Client, hcl string, vars map[string]any) (*nomad.Job, error) {
	job, err := ParseJob(ctx, c, hcl, vars)
	if err != nil {
		return nil, err
	}
	if _, _, err := c.Jobs().Register(job, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("register job %s: %w", *job.ID, err)
	}
	return job, nil
}

// WaitService blocks until Consul has at least one passing instance of
// service and returns the passing instances. It uses blocking queries.
func WaitService(ctx context.Context, c *consul.Client, service string) ([]*consul.ServiceEntry, error) {
	return WaitServiceN(ctx, c, service, 1)
}

// WaitServiceN is WaitService for at least n passing instances.
func WaitServiceN(ctx context.Context, c *consul.Client, service string, n int) ([]*consul.ServiceEntry, error) {
	var index uint64
	for {
		q := (&consul.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Second}).WithContext(ctx)
		entries, meta, err := c.Health().Service(service, "", true, q)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("wait for %d passing %s: %w", n, service, ctx.Err())
			}
			return nil, fmt.Errorf("wait for service %s: %w", service, err)
		}
		if len(entries) >= n {
			return entries, nil
		}
		index = meta.LastIndex
	}
}

// SleepJob is a minimal raw_exec service job named id in namespace ns
// ("" for the client's) whose one task sleeps: a stand-in for a job
// registered behind Metal's back, or for checking what a token may do.
func SleepJob(id, ns string) *nomad.Job {
	job := nomad.NewServiceJob(id, id, "global", 50)
	if ns != "" {
		job.Namespace = &ns
	}
	job.Datacenters = []string{"dc1"}
	task := nomad.NewTask("streamer", "raw_exec").SetConfig("command", "/bin/sleep").SetConfig("args", []string{"300"})
	cpu, mem := 50, 32
	task.Resources = &nomad.Resources{CPU: &cpu, MemoryMB: &mem}
	job.AddTaskGroup(nomad.NewTaskGroup("streamer", 1).AddTask(task))
	return job
}
