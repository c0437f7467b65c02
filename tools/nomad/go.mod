// Wrapper module that pins the Nomad build Metal uses (v1.6.1, the newest MPL
// release). Never run `go mod tidy` here: it deletes the require below.
module github.com/metal-stream/metal/tools/nomad

go 1.21

require github.com/hashicorp/nomad v1.6.1

replace (
	github.com/Microsoft/go-winio => github.com/endocrimes/go-winio v0.4.13-0.20190628114223-fb47a8b41948
	github.com/armon/go-metrics => github.com/armon/go-metrics v0.0.0-20230509193637-d9ca9af9f1f9
	github.com/hashicorp/hcl => github.com/hashicorp/hcl v1.0.1-0.20201016140508-a07e7d50bbee
	github.com/hashicorp/nomad/api => github.com/hashicorp/nomad/api v0.0.0-20230721134942-515895c7690c
)
