output "gateway_url" {
  description = "The gateway's URL. Issue player links with `metal player add NAME -gateway <url>`. With a dynamic gateway_port and no public_url: where to read it."
  value       = local.public_url != "" ? local.public_url : "dynamic port: consul catalog service -detailed metal-gateway (or set public_url)"
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
