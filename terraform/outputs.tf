# One output per setting in scheduler/config.py that comes from the
# infrastructure, named after the setting's attribute.

output "project" {
  description = "Project ID (SCION_SCHEDULER_PROJECT)."
  value       = var.project_id
}

output "location" {
  description = "Cloud Scheduler location of the jobs (SCION_SCHEDULER_LOCATION)."
  value       = var.region
}

output "topic" {
  description = "Topic ID the jobs publish fires to (SCION_SCHEDULER_TOPIC)."
  value       = google_pubsub_topic.fires.name
}

output "subscription" {
  description = "Pull subscription ID the workers read fires from (SCION_SCHEDULER_SUBSCRIPTION)."
  value       = google_pubsub_subscription.workers.name
}

output "job_prefix" {
  description = "Prefix of the job IDs the control module owns (SCION_SCHEDULER_JOB_PREFIX)."
  value       = local.job_prefix
}

output "collection_prefix" {
  description = "Prefix of the Firestore collections (SCION_SCHEDULER_COLLECTION_PREFIX)."
  value       = local.collection_prefix
}

output "database" {
  description = "Firestore database ID (SCION_SCHEDULER_DATABASE)."
  value       = local.database
}

output "dead_letter_topic" {
  description = "Topic ID that fires go to after max_delivery_attempts."
  value       = google_pubsub_topic.dead_letter.name
}

output "dead_letter_subscription" {
  description = "Subscription ID to inspect (or replay) dead-lettered fires from."
  value       = google_pubsub_subscription.dead_letter.name
}

output "hub_service_account_email" {
  description = "Service account the hub's control module must run as."
  value       = local.hub_sa_email
}

output "worker_service_account_email" {
  description = "Service account the workers must run as."
  value       = local.worker_sa_email
}

output "job_manager_role" {
  description = "Custom role granted to the hub for Cloud Scheduler job management."
  value       = google_project_iam_custom_role.job_manager.name
}

output "signing_key_secret" {
  description = "Full name of the Secret Manager secret to expose as SCION_SCHEDULER_SIGNING_KEY (null when messages are not signed)."
  value       = local.signing_key_secret
}

output "worker_service" {
  description = "Name of the worker Cloud Run service (null unless deploy_worker)."
  value       = var.deploy_worker ? google_cloud_run_v2_service.worker[0].name : null
}

output "hub_env" {
  description = "Environment variables to set on the hub (control module). Add SCION_SCHEDULER_SIGNING_KEY from signing_key_secret when set."
  value       = local.hub_env
}

output "worker_env" {
  description = "Environment variables to set on a worker that is not deployed by this module (the egress policy, SCION_SCHEDULER_ALLOWED_TARGETS, included). Add SCION_SCHEDULER_SIGNING_KEY from signing_key_secret when set."
  value       = local.worker_env
}
