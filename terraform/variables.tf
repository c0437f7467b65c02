variable "nomad_address" {
  type        = string
  description = "Nomad HTTP API address the gateway uses (and, in the examples, the provider)."
  default     = "http://127.0.0.1:4646"
}

variable "consul_address" {
  type        = string
  description = "Consul HTTP API address the gateway uses."
  default     = "http://127.0.0.1:8500"
}

variable "namespace" {
  type        = string
  description = "Nomad namespace created for Metal's jobs, session jobs and variables."
  default     = "metal"
}

variable "session_namespace" {
  type        = string
  description = "Nomad namespace created for session jobs and their keys, apart from the gateway and TURN jobs: the gateway's token may submit jobs only here."
  default     = "metal-sessions"

  validation {
    condition     = can(regex("^[a-zA-Z0-9-]{1,128}$", var.session_namespace))
    error_message = "A Nomad namespace name: 1-128 letters, digits and dashes."
  }
}

variable "gateway_datacenters" {
  type        = list(string)
  description = "Nomad datacenters the gateway may run in."
  default     = ["*"]
}

variable "edge_datacenters" {
  type        = list(string)
  description = "Nomad datacenters (edges) that run a TURN relay on every node."
  default     = ["*"]
}

variable "stream_datacenter" {
  type        = string
  description = "Datacenter the gateway places streams in."
  default     = "dc1"
}

variable "driver" {
  type        = string
  description = "Task driver for every Metal job: docker (production) or raw_exec (make dev's agents)."
  default     = "raw_exec"

  validation {
    condition     = contains(["docker", "raw_exec"], var.driver)
    error_message = "The driver must be \"docker\" or \"raw_exec\"."
  }
}

variable "metal_binary" {
  type        = string
  description = "Absolute path of the metal binary on the clients (raw_exec)."
  default     = "/usr/local/bin/metal"
}

variable "image" {
  type        = string
  description = "Container image with the metal binary for the gateway and TURN (docker)."
  default     = "ghcr.io/metal-stream/metal:latest"
}

variable "streamer_image" {
  type        = string
  description = "Container image of the streamer and its desktop (docker)."
  default     = "ghcr.io/metal-stream/metal-desktop:latest"
}

variable "gpu" {
  type        = bool
  description = "Streams require an NVIDIA GPU with NVENC (false for GPU-less machines such as make dev's)."
  default     = false
}

variable "capacity" {
  type        = string
  description = "Optional bound on sessions per edge: a number, or \"auto\" for none (as many as Nomad can place: node resources, encoder slots, live allocations)."
  default     = "auto"

  validation {
    condition     = var.capacity == "auto" || can(regex("^[1-9][0-9]{0,4}$", var.capacity))
    error_message = "The capacity must be \"auto\" or a positive whole number."
  }
}

variable "queue" {
  type        = number
  description = "Sessions that may wait beyond capacity; more get 429."
  default     = 10

  validation {
    condition     = var.queue >= 0 && var.queue <= 100000 && floor(var.queue) == var.queue
    error_message = "The queue is a whole number from 0 to 100000."
  }
}

variable "gateway_port" {
  type        = number
  description = "Static HTTP port of the gateway (0 picks a dynamic one; the gateway_url output reads it from Consul)."
  default     = 8080

  validation {
    condition     = var.gateway_port >= 0 && var.gateway_port <= 65535 && floor(var.gateway_port) == var.gateway_port
    error_message = "The gateway port is 0 (dynamic) or 1-65535."
  }
}

variable "public_url" {
  type        = string
  description = "Gateway URL as players reach it (a load balancer, HTTPS), for the output and player links; empty: the gateway's own address and port, from its listener."
  default     = ""
}

variable "open_mode" {
  type        = bool
  description = "Let anyone play without a player link (local development only)."
  default     = false
}

variable "turn_port" {
  type        = number
  description = "TURN port (UDP and TCP) on every edge node."
  default     = 3478

  validation {
    condition     = var.turn_port >= 1 && var.turn_port <= 65535 && floor(var.turn_port) == var.turn_port
    error_message = "The TURN port is 1-65535 (static: browsers are told it)."
  }
}

variable "turn_relay_ip" {
  type        = string
  description = "Public IPv4 of the relays; empty uses each node's meta.public_ip."
  default     = ""

  validation {
    condition     = var.turn_relay_ip == "" || can(regex("^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$", var.turn_relay_ip))
    error_message = "turn_relay_ip is empty or an IPv4 address."
  }
}

variable "turn_allow" {
  type        = string
  description = "Comma-separated CIDRs the relays may reach (the streamers' networks: public ones, or RFC 1918 / ULA VPC ranges); empty allows any public address."
  default     = ""

  validation {
    condition     = var.turn_allow == "" || can(regex("^ *[0-9A-Fa-f:.]+/[0-9]{1,3} *(, *[0-9A-Fa-f:.]+/[0-9]{1,3} *)*$", var.turn_allow))
    error_message = "turn_allow is a comma-separated list of CIDRs, such as \"10.1.0.0/16,203.0.113.0/24\"."
  }

  # What metal turn refuses at start (-allow): a range spanning internal
  # ones, such as 0.0.0.0/0, ::/0 or CGNAT.
  validation {
    condition     = !can(regex("(^|,) *([0-9.]+/[0-7]|[0-9A-Fa-f:]*:[0-9A-Fa-f:]*/[0-6]|100\\.(6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])\\.[0-9.]+/[0-9]+) *(,|$)", var.turn_allow))
    error_message = "turn_allow lists public networks and RFC 1918 or ULA VPC ranges apart: no range spanning loopback, link-local or CGNAT (0.0.0.0/0, ::/0, 100.64.0.0/10)."
  }
}

variable "turn_self_ips" {
  type        = string
  description = "Comma-separated addresses the relays refuse as their own besides their interfaces and relay IP: the nodes' public addresses when turn_relay_ip is set (NAT), a load balancer's address."
  default     = ""
}

variable "turn_deny_ports" {
  type        = string
  description = "Comma-separated peer ports the relays never send to, on any address: the cluster's Nomad and Consul ports."
  default     = "4646,4647,4648,8300,8301,8302,8500,8501,8502,8503,8600"

  validation {
    condition     = can(regex("^[0-9]{1,5}(,[0-9]{1,5})*$", var.turn_deny_ports))
    error_message = "turn_deny_ports is a comma-separated list of ports."
  }
}

variable "turn_tls_port" {
  type        = number
  description = "TURN over TLS (turns:) port on every relay, 5349 or 443, for players behind networks that block UDP; 0 disables it."
  default     = 0

  validation {
    condition     = var.turn_tls_port >= 0 && var.turn_tls_port <= 65535 && floor(var.turn_tls_port) == var.turn_tls_port
    error_message = "The TURN TLS port is 0 (off) or 1-65535."
  }
}

variable "turn_tls_name" {
  type        = string
  description = "Host name of the relays' certificate, put in the turns: URL; empty uses the relay IP (the certificate then needs an IP SAN)."
  default     = ""
}

variable "turn_tls_cert" {
  type        = string
  description = "PEM certificate chain of the relays' TLS listener (with turn_tls_port)."
  default     = ""
}

variable "turn_tls_key" {
  type        = string
  description = "PEM private key of turn_tls_cert."
  default     = ""
  sensitive   = true
}

variable "manage_acls" {
  type        = bool
  description = "Create the gateway's Nomad and Consul ACL policies and tokens (clusters with ACLs enabled)."
  default     = false
}

variable "nearest_turn_query" {
  type        = bool
  description = "Create a Consul prepared query that returns the nearest passing TURN relay."
  default     = false
}
