output "gateway_url" {
  description = "The gateway's URL: public_url, or where its first instance listens (from Consul). Issue player links with `metal player add NAME -gateway <url>`."
  value = var.public_url != "" ? var.public_url : try(
    format("http://%s:%d", local.gateway_instance.address != "" ? local.gateway_instance.address : local.gateway_instance.node_address, local.gateway_instance.port),
    "no metal-gateway service in Consul yet: consul catalog service -detailed metal-gateway",
  )
}

output "session_namespace" {
  description = "Nomad namespace holding the session jobs and their keys."
  value       = nomad_namespace.sessions.name
}

output "namespace" {
  description = "Nomad namespace holding Metal's jobs and variables."
  value       = nomad_namespace.metal.name
}

output "admin_token_command" {
  description = "Command that prints the gateway's admin token (kept out of Terraform outputs)."
  value       = "nomad var get -namespace ${nomad_namespace.metal.name} -item admin_token nomad/jobs/metal-gateway"
}

output "streamer_job_id_prefix" {
  description = "Session jobs are named this prefix plus the session id."
  value       = "metal-session-"
}
