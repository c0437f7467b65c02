# Deploy Metal onto a running Nomad and Consul, such as the agents `make dev`
# starts (their addresses are printed at start), or any existing cluster.

variable "nomad_address" {
  type        = string
  description = "Nomad HTTP API address."
  default     = "http://127.0.0.1:4646"
}

variable "consul_address" {
  type        = string
  description = "Consul HTTP API address."
  default     = "http://127.0.0.1:8500"
}

variable "metal_binary" {
  type        = string
  description = "Absolute path of the metal binary on the Nomad clients."
  default     = "/usr/local/bin/metal"
}

provider "nomad" {
  address = var.nomad_address
}

provider "consul" {
  address = var.consul_address
}

module "metal" {
  source = "../.."

  nomad_address  = var.nomad_address
  consul_address = var.consul_address
  driver         = "raw_exec"
  metal_binary   = var.metal_binary
  gpu            = false
  capacity       = "2"
  open_mode      = true
  turn_relay_ip  = "127.0.0.1"
  gateway_port   = 8090
  turn_port      = 3488
}

output "gateway_url" {
  description = "Open this URL to play (open mode)."
  value       = module.metal.gateway_url
}

output "admin_token_command" {
  description = "Prints the admin token for `metal player add`."
  value       = module.metal.admin_token_command
}
