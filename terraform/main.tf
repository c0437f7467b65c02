provider "nomad" {
  address = var.nomad_address
}

resource "nomad_job" "gateway" {
  jobspec = file("${path.module}/../jobs/gateway.nomad.hcl")

  hcl2 {
    vars = {
      datacenters = jsonencode(var.datacenters)
      image       = var.gateway_image
      nomad_addr  = var.nomad_address
      consul_addr = var.consul_address
    }
  }
}
