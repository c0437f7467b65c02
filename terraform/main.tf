locals {
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
#
# On destroy the gateway job goes first; each gateway, seeing its job
# stopped, purges the session jobs and keys with its own tokens
# (-teardown-on-stop) while the provider retries deleting this namespace
# (up to 10 times, 5 s apart) as long as a job is left in it. So the tokens
# are destroyed after this namespace, not beside it.
resource "nomad_namespace" "sessions" {
  name        = var.session_namespace
  description = "Metal: one job per streaming session, registered by the gateway."
  depends_on  = [nomad_acl_token.gateway, consul_acl_token.gateway]

  # Session jobs run the streamer's driver and no other: a leaked gateway
  # token cannot submit, say, a raw_exec job to production clients (a
  # root shell on each) when the streamers run in docker.
  capabilities {
    enabled_task_drivers = [var.driver]
  }
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
      self_ips     = var.turn_self_ips
      deny_ports   = var.turn_deny_ports
      tls_port     = var.turn_tls_port
      tls_name     = var.turn_tls_name
    }
  }

  lifecycle {
    precondition {
      condition     = var.turn_tls_port == 0 || (var.turn_tls_cert != "" && var.turn_tls_key != "")
      error_message = "turn_tls_port needs turn_tls_cert and turn_tls_key (PEM)."
    }
    precondition {
      condition     = var.turn_tls_port != var.turn_port
      error_message = "turn_tls_port must differ from turn_port (TCP on turn_port is plain TURN)."
    }
  }
}

resource "nomad_job" "gateway" {
  jobspec    = file("${path.module}/../jobs/gateway.nomad.hcl")
  depends_on = [nomad_variable.gateway]
  # Wait for the deployment to be healthy: the gateway_url output reads
  # where it listens from Consul.
  detach = false

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
      public_url        = var.public_url # empty: the gateway's own address, from its listener
    }
  }
}

# There is no nomad_job for the streamer: the gateway registers
# jobs/streamer.nomad.hcl once per session as job metal-session-<id> (see the
# project README for why), with the gpu, driver and image settings passed
# above. `make test` parses that file on a real Nomad with those variables.

# Where the gateway listens, once it runs (the job waits for a healthy
# deployment): its metal-gateway service in Consul, right for a static and a
# dynamic gateway_port alike. Read only when public_url is not set.
data "consul_service" "gateway" {
  count      = var.public_url == "" ? 1 : 0
  name       = "metal-gateway"
  depends_on = [nomad_job.gateway]
}

locals {
  # The first instance, or null while none is registered.
  gateway_instance = try(data.consul_service.gateway[0].service[0], null)
}
