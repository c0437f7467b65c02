// Package e2e holds Metal's whole-system tests and benchmarks: the real
// metal binary, real Consul and Nomad agents, real GStreamer and headless
// Chromium, all on loopback or in network namespaces the tests create.
package e2e
