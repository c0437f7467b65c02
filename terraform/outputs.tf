output "gateway_url" {
  description = "The gateway's URL. Issue player links with `metal player add NAME -gateway <url>`."
  value       = local.public_url
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
