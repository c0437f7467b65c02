// Wrapper module that pins docker buildx v0.19.3 (Apache-2.0), the BuildKit
// client: Debian 12's Docker has none, and images/Dockerfile needs BuildKit
// for its Go caches (RUN --mount=type=cache). Never run `go mod tidy` here:
// it deletes the require below.
module github.com/metal-stream/metal/tools/buildx

go 1.22.0

require github.com/docker/buildx v0.19.3
