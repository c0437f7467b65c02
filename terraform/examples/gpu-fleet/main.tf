# Sketch: a cloud GPU fleet. Nomad servers and Consul run as usual; each edge
# region has GPU clients with NVENC (for example NVIDIA L4 or A10G, not H100,
# H200 or A100, which have no encoder) in their own Nomad datacenter, with:
#
#   plugin_dir = "/opt/nomad/plugins"   # holds metal-nvidia (tools/nvidia-plugin)
#   plugin "metal-nvidia" { config { fingerprint_period = "10s" } }
#   client {
#     meta     = { public_ip = "<the instance's public IPv4>" }
#     reserved { reserved_ports = "49160-49559" }
#   }
#   plugin "docker" { config { allow_runtimes = ["runc", "nvidia"] } }
#
# and security groups open for UDP and TCP 3478, UDP 49160-49559 (TURN
# relays) and the streamers' dynamic ports. The instances themselves come
# from your cloud's module (an autoscaling group per region); this module
# only deploys Metal onto the result.

variable "nomad_address" {
  type        = string
  description = "Nomad HTTP API address (with TLS in production)."
}

variable "consul_address" {
  type        = string
  description = "Consul HTTP API address."
}

variable "public_url" {
  type        = string
  description = "The gateway's public URL behind your load balancer."
}

variable "edge" {
  type        = string
  description = "Nomad datacenter of the GPU edge the gateway places streams in."
  default     = "eu-west"
}

provider "nomad" {
  address = var.nomad_address
}

provider "consul" {
  address = var.consul_address
}

module "metal" {
  source = "../.."

  nomad_address       = var.nomad_address
  consul_address      = var.consul_address
  driver              = "docker"
  gpu                 = true
  capacity            = "auto"
  stream_datacenter   = var.edge
  edge_datacenters    = [var.edge]
  gateway_datacenters = ["control"]
  public_url          = var.public_url
  manage_acls         = true
  nearest_turn_query  = true
}

output "gateway_url" {
  description = "The gateway's public URL."
  value       = module.metal.gateway_url
}
