output "hub_env" {
  description = "Set these on the hub: `terraform output -json hub_env`."
  value       = module.scion_scheduler.hub_env
}

output "hub_service_account_email" {
  description = "Run the hub as this service account."
  value       = module.scion_scheduler.hub_service_account_email
}

output "worker_service" {
  description = "Cloud Run service running the two worker replicas."
  value       = module.scion_scheduler.worker_service
}

output "dead_letter_subscription" {
  description = "Where fires that kept failing wait for inspection."
  value       = module.scion_scheduler.dead_letter_subscription
}

output "signing_key_secret" {
  description = "Secret to expose to the hub as SCION_SCHEDULER_SIGNING_KEY."
  value       = module.scion_scheduler.signing_key_secret
}
