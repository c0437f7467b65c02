# The Metal gateway: player links, admission and the player page.
#
#   nomad job run -var driver=raw_exec -var metal_binary=$PWD/bin/metal jobs/gateway.nomad.hcl
#
# Production runs the container image with the docker driver; `make dev` and
# the tests run the local binary with raw_exec.

variable "datacenters" {
  type        = list(string)
  description = "Datacenters the gateway may run in."
  default     = ["*"]
}

variable "count" {
  type        = number
  description = "Number of gateway instances. They share their state in Consul KV and one of them, the holder of a Consul lock, places and reaps (README: Gateways in numbers)."
  default     = 1
}

variable "driver" {
  type        = string
  description = "Task driver: docker (production) or raw_exec (local development and tests)."
  default     = "docker"

  validation {
    condition     = contains(["docker", "raw_exec"], var.driver)
    error_message = "The driver must be \"docker\" or \"raw_exec\"."
  }
}

variable "image" {
  type        = string
  description = "Container image with the metal binary (docker driver)."
  default     = "ghcr.io/metal-stream/metal:latest"
}

variable "metal_binary" {
  type        = string
  description = "Absolute path of the metal binary on the client (raw_exec driver)."
  default     = "/usr/local/bin/metal"
}

variable "nomad_addr" {
  type        = string
  description = "Nomad HTTP API address the gateway uses."
  default     = "http://127.0.0.1:4646"
}

variable "consul_addr" {
  type        = string
  description = "Consul HTTP API address the gateway uses."
  default     = "http://127.0.0.1:8500"
}

variable "namespace" {
  type        = string
  description = "Nomad namespace the gateway registers streamer jobs in (its own)."
  default     = "default"
}

variable "session_namespace" {
  type        = string
  description = "Nomad namespace for session jobs and their keys; empty uses var.namespace. A namespace of their own keeps the gateway's token (which may submit session jobs) away from the gateway and TURN jobs."
  default     = ""
}

variable "public_url" {
  type        = string
  description = "Gateway URL as players reach it; empty derives it from the listener."
  default     = ""
}

variable "open_mode" {
  type        = bool
  description = "Let anyone start a session without a player link. Only for local development."
  default     = false
}

variable "capacity" {
  type        = string
  description = "Optional bound on sessions per edge: a number, or \"auto\" for none (as many as Nomad can place: node resources, encoder slots, live allocations)."
  default     = "auto"
}

variable "queue" {
  type        = number
  description = "Sessions that may wait beyond capacity; more get 429."
  default     = 10
}

variable "stream_datacenter" {
  type        = string
  description = "Datacenter to place streams in."
  default     = "dc1"
}

variable "streamer_driver" {
  type        = string
  description = "Task driver of streamer jobs: docker or raw_exec."
  default     = "docker"
}

variable "streamer_args" {
  type        = list(string)
  description = "Extra gateway flags for streamer jobs, for example [\"-gpu=false\", \"-streamer-demo\"]."
  default     = []
}

variable "port" {
  type        = number
  description = "Static HTTP port for the gateway; 0 picks a dynamic port."
  default     = 0
}

locals {
  args = concat([
    "gateway",
    "-listen", "${NOMAD_IP_http}:${NOMAD_PORT_http}",
    "-open=${var.open_mode}",
    "-capacity", var.capacity,
    "-queue", "${var.queue}",
    "-datacenter", var.stream_datacenter,
    "-streamer-driver", var.streamer_driver,
    "-streamer-binary", var.metal_binary,
    "-public-url", var.public_url,
    "-session-namespace", var.session_namespace,
  ], var.streamer_args)
  # The signing key, admin token, TURN secret and the gateway's Nomad and
  # Consul tokens come from the Nomad variable nomad/jobs/metal-gateway
  # (keys key, admin_token, turn_secret, nomad_token, consul_token), never
  # from the job specification.
  secrets_template = <<-EOT
    {{ with nomadVar "nomad/jobs/metal-gateway" }}METAL_KEY={{ .key }}
    METAL_ADMIN_TOKEN={{ .admin_token }}
    {{ if .turn_secret }}METAL_TURN_SECRET={{ .turn_secret }}{{ end }}
    {{ if .nomad_token }}NOMAD_TOKEN={{ .nomad_token }}{{ end }}
    {{ if .consul_token }}CONSUL_HTTP_TOKEN={{ .consul_token }}{{ end }}{{ end }}
  EOT
  env = {
    NOMAD_ADDR       = var.nomad_addr
    NOMAD_NAMESPACE  = var.namespace
    CONSUL_HTTP_ADDR = var.consul_addr
  }
}

job "metal-gateway" {
  datacenters = var.datacenters
  namespace   = var.namespace
  type        = "service"

  group "gateway" {
    count = var.count

    network {
      port "http" {
        static = var.port
      }
    }

    service {
      name     = "metal-gateway"
      provider = "consul"
      port     = "http"

      # Ready, not merely alive: a gateway that cannot reach Nomad or
      # Consul, or has not loaded its sessions, takes no players.
      check {
        name     = "readyz"
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "gateway" {
      driver = var.driver

      # Stopping this job for good (terraform destroy, nomad job stop) makes
      # every gateway purge the session jobs and keys before it exits, so the
      # session namespace can be deleted after it: time for that.
      kill_timeout = "30s"

      # raw_exec runs the metal binary on the client (development, tests);
      # docker runs the image (production).
      dynamic "config" {
        for_each = var.driver == "raw_exec" ? [1] : []

        content {
          command = var.metal_binary
          args    = local.args
        }
      }

      dynamic "config" {
        for_each = var.driver == "docker" ? [1] : []

        # Host networking: the gateway reaches the node's Consul and Nomad
        # agents on their usual loopback addresses, as raw_exec does.
        content {
          image        = var.image
          network_mode = "host"
          # An init as PID 1 reaps what the task orphans (a desktop
          # started in the background).
          init = true
          args = local.args
        }
      }

      env = merge(local.env, {
        # The image's HEALTHCHECK (docker ps shows it).
        METAL_HEALTH_URL = "http://${NOMAD_ADDR_http}/readyz"
      })

      template {
        data        = local.secrets_template
        destination = "secrets/metal.env"
        env         = true
      }

      resources {
        cpu    = 200
        memory = 128
      }
    }
  }
}
