locals {
  # With a dynamic port (0) there is no address to tell before the job runs:
  # the gateway derives its URL from its listener, and the output says where
  # to read it.
  public_url = var.public_url != "" ? var.public_url : (var.gateway_port == 0 ? "" : "http://127.0.0.1:${var.gateway_port}")
  streamer_args = compact([
    "-gpu=${var.gpu}",
    var.driver == "docker" ? "-streamer-image=${var.streamer_image}" : "",
    var.open_mode ? "-streamer-loopback" : "",
    var.open_mode ? "-streamer-demo" : "",
  ])
}

resource "nomad_namespace" "metal" {
  name        = var.namespace
  description = "Metal: gateway and TURN relays."
}

# Session jobs and their keys live apart: the gateway's token may submit
# jobs here and nowhere else, so it cannot rewrite the gateway or TURN jobs.
resource "nomad_namespace" "sessions" {
  name        = var.session_namespace
  description = "Metal: one job per streaming session, registered by the gateway."
}

# Secrets: generated here, stored only in Nomad variables that the jobs'
# templates read, never output in clear.
resource "random_password" "gateway_key" {
  length  = 48
  special = false
}

resource "random_password" "admin_token" {
  length  = 32
  special = false
}

resource "random_password" "turn_secret" {
  length  = 48
  special = false
}

resource "nomad_variable" "gateway" {
  namespace = nomad_namespace.metal.name
  path      = "nomad/jobs/metal-gateway"
  items = merge(
    {
      key         = random_password.gateway_key.result
      admin_token = random_password.admin_token.result
      turn_secret = random_password.turn_secret.result
    },
    var.manage_acls ? {
      nomad_token  = nomad_acl_token.gateway[0].secret_id
      consul_token = data.consul_acl_token_secret_id.gateway[0].secret_id
    } : {},
  )
}

resource "nomad_variable" "turn" {
  namespace = nomad_namespace.metal.name
  path      = "nomad/jobs/metal-turn"
  items = merge(
    { secret = random_password.turn_secret.result },
    var.turn_tls_port == 0 ? {} : { tls_cert = var.turn_tls_cert, tls_key = var.turn_tls_key },
  )
}

resource "nomad_job" "turn" {
  jobspec    = file("${path.module}/../jobs/turn.nomad.hcl")
  depends_on = [nomad_variable.turn]

  hcl2 {
    vars = {
      namespace    = nomad_namespace.metal.name
      datacenters  = jsonencode(var.edge_datacenters)
      driver       = var.driver
      image        = var.image
      metal_binary = var.metal_binary
      port         = var.turn_port
      relay_ip     = var.turn_relay_ip
      allow        = var.turn_allow
      tls_port     = var.turn_tls_port
      tls_name     = var.turn_tls_name
    }
  }
}

resource "nomad_job" "gateway" {
  jobspec    = file("${path.module}/../jobs/gateway.nomad.hcl")
  depends_on = [nomad_variable.gateway]

  hcl2 {
    vars = {
      namespace         = nomad_namespace.metal.name
      session_namespace = nomad_namespace.sessions.name
      datacenters       = jsonencode(var.gateway_datacenters)
      driver            = var.driver
      image             = var.image
      metal_binary      = var.metal_binary
      nomad_addr        = var.nomad_address
      consul_addr       = var.consul_address
      open_mode         = var.open_mode
      capacity          = var.capacity
      queue             = var.queue
      stream_datacenter = var.stream_datacenter
      streamer_driver   = var.driver
      streamer_args     = jsonencode(local.streamer_args)
      port              = var.gateway_port
      public_url        = local.public_url
    }
  }
}

# There is no nomad_job for the streamer: the gateway registers
# jobs/streamer.nomad.hcl once per session as job metal-session-<id> (see the
# project README for why), with the gpu, driver and image settings passed
# above. `make test` parses that file on a real Nomad with those variables.
