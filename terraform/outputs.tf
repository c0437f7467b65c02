output "gateway_job_id" {
  description = "Nomad job id of the gateway."
  value       = nomad_job.gateway.id
}
