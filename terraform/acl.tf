# The gateway's least privilege, for clusters with ACLs enabled
# (manage_acls = true).

resource "nomad_acl_policy" "gateway" {
  count       = var.manage_acls ? 1 : 0
  name        = "metal-gateway"
  description = "Metal gateway: register, read and stop session jobs; write their keys; read nodes."
  rules_hcl   = <<-EOT
    namespace "${var.namespace}" {
      policy       = "deny"
      capabilities = ["submit-job", "read-job", "list-jobs", "parse-job"]

      variables {
        path "nomad/jobs/metal-session-*" {
          capabilities = ["write", "read", "destroy"]
        }
      }
    }

    node {
      policy = "read"
    }
  EOT
}

resource "nomad_acl_token" "gateway" {
  count    = var.manage_acls ? 1 : 0
  name     = "metal-gateway"
  type     = "client"
  policies = [nomad_acl_policy.gateway[0].name]
}

resource "consul_acl_policy" "gateway" {
  count       = var.manage_acls ? 1 : 0
  name        = "metal-gateway"
  description = "Metal gateway: read streamer and TURN health, keep sessions and players in KV."
  rules       = <<-EOT
    service_prefix "metal-" {
      policy = "read"
    }

    node_prefix "" {
      policy = "read"
    }

    key_prefix "metal/" {
      policy = "write"
    }
  EOT
}

resource "consul_acl_token" "gateway" {
  count       = var.manage_acls ? 1 : 0
  description = "metal-gateway"
  policies    = [consul_acl_policy.gateway[0].name]
}

data "consul_acl_token_secret_id" "gateway" {
  count       = var.manage_acls ? 1 : 0
  accessor_id = consul_acl_token.gateway[0].id
}

resource "consul_prepared_query" "nearest_turn" {
  count        = var.nearest_turn_query ? 1 : 0
  name         = "metal-turn-nearest"
  service      = "metal-turn"
  near         = "_agent"
  only_passing = true
}
