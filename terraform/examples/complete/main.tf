# A complete deployment: topic, subscription with dead-lettering, Firestore
# with TTL and index, the hub's and workers' identities, and two always-on
# worker replicas on Cloud Run.
module "scion_scheduler" {
  source = "../.."

  project_id  = var.project_id
  region      = var.region
  name_prefix = "scion"

  # Pub/Sub delivery: a worker that dies mid-fire gives it back after a
  # minute; a fire that keeps failing is dead-lettered after 10 attempts.
  ack_deadline_seconds          = 10
  retry_minimum_backoff_seconds = 10
  retry_maximum_backoff_seconds = 600
  max_delivery_attempts         = 10
  message_retention_days        = 7

  signing_key_secret = var.signing_key_secret

  # Where fires may go: only the hub's fire endpoint (the `scion` action), and
  # never the metadata server or another internal address.
  allowed_targets = var.allowed_targets

  # Two worker replicas, CPU always allocated, so a fire is pulled even while
  # one replica restarts.
  deploy_worker        = true
  worker_image         = var.worker_image
  worker_min_instances = 2
  worker_max_instances = 2

  labels = {
    env = "example"
  }
}
