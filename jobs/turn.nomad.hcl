# The TURN relay of every edge node: a system job with host networking, found
# by the gateway in Consul as "metal-turn" (tag dc-<datacenter>).
#
#   nomad var put nomad/jobs/metal-turn secret=$(openssl rand -hex 32)
#   nomad job run jobs/turn.nomad.hcl
#
# The gateway must hold the same secret (turn_secret in the Nomad variable
# nomad/jobs/metal-gateway). Reserve the relay ports on each client:
#
#   client { reserved { reserved_ports = "49160-49559" } }

variable "datacenters" {
  type        = list(string)
  description = "Edge datacenters to run a relay in."
  default     = ["*"]
}

variable "namespace" {
  type        = string
  description = "Nomad namespace of the relay job."
  default     = "default"
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

variable "port" {
  type        = number
  description = "TURN port, UDP and TCP."
  default     = 3478
}

variable "health_port" {
  type        = number
  description = "Port of the relay's /healthz and /metrics."
  default     = 3479
}

variable "bind" {
  type        = string
  description = "Address the TURN and health listeners bind to."
  default     = "0.0.0.0"
}

variable "relay_ip" {
  type        = string
  description = "Public IPv4 put in relay candidates; empty uses the node's meta.public_ip."
  default     = ""
}

variable "min_port" {
  type        = number
  description = "Lowest relay port; reserve min_port-max_port on every client."
  default     = 49160
}

variable "max_port" {
  type        = number
  description = "Highest relay port."
  default     = 49559
}

variable "allow" {
  type        = string
  description = "Comma-separated CIDRs relays may reach (the streamers' networks); empty allows any public address."
  default     = ""
}

variable "self_ips" {
  type        = string
  description = "Comma-separated addresses of the edges that relays must refuse besides their interfaces and relay IP: the nodes' public addresses when relay_ip is set (NAT), a load balancer's address in front of them."
  default     = ""
}

variable "deny_ports" {
  type        = string
  description = "Comma-separated peer ports refused on every address: the cluster's Nomad and Consul ports (set these if yours are not the defaults)."
  default     = "4646,4647,4648,8300,8301,8302,8500,8501,8502,8503,8600"
}

variable "allow_local_peers" {
  type        = bool
  description = "Let relays reach the node's other addresses (a single node whose streamers share it); off, a relay reaches streamers on other nodes only."
  default     = false
}

variable "tls_port" {
  type        = number
  description = "TURN over TLS (turns:) port, 5349 or 443, for networks that block UDP; 0 disables it. The certificate and key come from the Nomad variable nomad/jobs/metal-turn (items tls_cert, tls_key, PEM)."
  default     = 0
}

variable "tls_name" {
  type        = string
  description = "Host name in the turns: URL the gateway hands out (the certificate's name); empty uses the relay IP (the certificate then needs an IP SAN)."
  default     = ""
}

locals {
  relay_ip = var.relay_ip != "" ? var.relay_ip : "$${meta.public_ip}"
  args = concat([
    "turn",
    "-listen", "${var.bind}:${var.port}",
    "-health-listen", "${var.bind}:${var.health_port}",
    "-relay-ip", local.relay_ip,
    "-min-port", "${var.min_port}",
    "-max-port", "${var.max_port}",
    "-allow", var.allow,
    "-allow-local-peers=${var.allow_local_peers}",
    # Without relay_ip the relay IP is the node's meta.public_ip, refused
    # as the relay's own; with relay_ip (a NAT, or nodes without that meta:
    # Nomad refuses to start a task whose args name a missing meta), list
    # the nodes' public addresses in self_ips.
    "-self-ip", var.self_ips,
    "-deny-ports", var.deny_ports,
    ], var.tls_port == 0 ? [] : [
    "-tls-listen", "${var.bind}:${var.tls_port}",
    "-tls-cert", "$${NOMAD_SECRETS_DIR}/turn-tls.crt",
    "-tls-key", "$${NOMAD_SECRETS_DIR}/turn-tls.key",
  ])
  tls_templates = var.tls_port == 0 ? {} : {
    "secrets/turn-tls.crt" = "{{ with nomadVar \"nomad/jobs/metal-turn\" }}{{ .tls_cert }}{{ end }}"
    "secrets/turn-tls.key" = "{{ with nomadVar \"nomad/jobs/metal-turn\" }}{{ .tls_key }}{{ end }}"
  }
  secret_template = <<-EOT
    {{ with nomadVar "nomad/jobs/metal-turn" }}METAL_SECRET={{ .secret }}{{ end }}
  EOT
}

job "metal-turn" {
  datacenters = var.datacenters
  namespace   = var.namespace
  type        = "system"

  group "turn" {
    network {
      mode = "host"

      port "turn" {
        static = var.port
      }

      port "health" {
        static = var.health_port
      }

      dynamic "port" {
        for_each = var.tls_port == 0 ? [] : [var.tls_port]

        content {
          static = port.value
        }
        labels = ["turns"]
      }
    }

    service {
      name     = "metal-turn"
      provider = "consul"
      port     = "turn"
      tags     = ["dc-$${node.datacenter}"]

      meta {
        relay_ip = local.relay_ip
        # turns: is offered when tls_port is set (the gateway reads these).
        tls_port = "${var.tls_port}"
        tls_name = var.tls_name
        # What a player's page times to measure its RTT to this edge.
        probe = "http://${local.relay_ip}:${var.health_port}/probe"
      }

      check {
        name     = "healthz"
        type     = "http"
        port     = "health"
        path     = "/healthz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "turn" {
      driver = var.driver

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

        content {
          image        = var.image
          network_mode = "host"
          # An init as PID 1 reaps what the task orphans (a desktop
          # started in the background).
          init = true
          args = local.args
        }
      }

      env = {
        # The image's HEALTHCHECK (docker ps shows it).
        METAL_HEALTH_URL = "http://${var.bind == "0.0.0.0" ? "127.0.0.1" : var.bind}:${var.health_port}/healthz"
      }

      template {
        data        = local.secret_template
        destination = "secrets/metal.env"
        env         = true
      }

      dynamic "template" {
        for_each = local.tls_templates

        content {
          data        = template.value
          destination = template.key
          perms       = "0600"
          # The image runs as uid 10001, which must read its key.
          uid = var.driver == "docker" ? 10001 : null
          gid = var.driver == "docker" ? 10001 : null
        }
      }

      resources {
        cpu    = 500
        memory = 128
      }
    }
  }
}
