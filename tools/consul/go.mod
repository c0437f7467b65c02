// Wrapper module that pins the Consul build Metal uses (v1.16.1, the newest
// MPL release). Never run `go mod tidy` here: it deletes the require below.
module github.com/metal-stream/metal/tools/consul

go 1.20

require github.com/hashicorp/consul v1.16.1

exclude (
	github.com/hashicorp/go-msgpack v1.1.5
	github.com/hashicorp/go-msgpack v1.1.6
)
