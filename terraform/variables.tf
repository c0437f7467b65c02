variable "nomad_address" {
  type        = string
  description = "Nomad HTTP API address the provider and the gateway use."
  default     = "http://127.0.0.1:4646"
}

variable "consul_address" {
  type        = string
  description = "Consul HTTP API address the gateway uses."
  default     = "http://127.0.0.1:8500"
}

variable "datacenters" {
  type        = list(string)
  description = "Nomad datacenters the gateway may run in."
  default     = ["*"]
}

variable "gateway_image" {
  type        = string
  description = "Container image with the metal binary."
  default     = "ghcr.io/metal-stream/metal:latest"
}
