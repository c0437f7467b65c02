# The gateway's least privilege, for clusters with ACLs enabled
# (manage_acls = true).

# Capabilities only, no "policy": Nomad expands a namespace's policy into a
# capability list and appends it, and policy "deny" expands to "deny", which
# clears every capability of the block (the gateway could then register,
# read and list nothing).
resource "nomad_acl_policy" "gateway" {
  count       = var.manage_acls ? 1 : 0
  name        = "metal-gateway"
  description = "Metal gateway: register, read and purge session jobs and their keys in the session namespace; read the rest for room counting."
  rules_hcl   = <<-EOT
    namespace "${var.session_namespace}" {
      capabilities = ["submit-job", "read-job", "list-jobs", "parse-job"]

      variables {
        path "nomad/jobs/metal-session-*" {
          capabilities = ["write", "read", "destroy", "list"]
        }
      }
    }

    namespace "${var.namespace}" {
      capabilities = ["read-job", "list-jobs"]
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
  description = "Metal gateway: read streamer and TURN health, keep sessions and players in KV, hold the leader lock."
  rules       = <<-EOT
    service_prefix "metal-" {
      policy = "read"
    }

    # The lock check each gateway registers and passes (leader election).
    service "metal-gateway-lock" {
      policy = "write"
    }

    node_prefix "" {
      policy = "read"
    }

    # The lock sessions.
    session_prefix "" {
      policy = "write"
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
