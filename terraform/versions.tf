terraform {
  required_version = ">= 1.6.0"

  required_providers {
    # v2.1.0 and later are built on BSL Nomad: stay on v2.0.0.
    nomad = {
      source  = "hashicorp/nomad"
      version = "= 2.0.0"
    }
    consul = {
      source  = "hashicorp/consul"
      version = "~> 2.20"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}
