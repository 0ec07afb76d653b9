# Optional: the worker as a Cloud Run service. It serves no traffic; it pulls
# fires from the subscription, and its HTTP server only answers Cloud Run's
# health probes.
resource "google_cloud_run_v2_service" "worker" {
  count = var.deploy_worker ? 1 : 0

  project  = var.project_id
  name     = "${var.name_prefix}-worker"
  location = var.region
  labels   = local.labels

  # Probes come from Cloud Run itself, so nothing needs to reach the service
  # from outside; and no one is granted roles/run.invoker.
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  deletion_protection = var.worker_deletion_protection

  template {
    service_account = local.worker_sa_email
    labels          = local.labels

    # With no requests to scale on, the minimum is what normally runs. Two or
    # more keep fires flowing while one instance restarts or is moved.
    scaling {
      min_instance_count = var.worker_min_instances
      max_instance_count = var.worker_max_instances
    }

    containers {
      image   = var.worker_image
      command = ["scion-worker"]
      # One worker process per whole CPU (README, Workers: Processes).
      args = ["run", "--processes", tostring(var.worker_processes)]

      # Cloud Run passes this to the container as PORT (the health server's
      # port); PORT is reserved and is not set below.
      ports {
        container_port = var.worker_port
      }

      resources {
        limits = {
          cpu    = var.worker_cpu
          memory = var.worker_memory
        }
        # A pull subscriber works between requests: with the default
        # (CPU only during requests) it would be throttled to nothing.
        cpu_idle          = false
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.worker_env
        content {
          name  = env.key
          value = env.value
        }
      }

      # The signing key comes from Secret Manager; the value never passes
      # through Terraform or its state.
      dynamic "env" {
        for_each = local.signing_key_secret != null ? [local.signing_key_secret] : []
        content {
          name = "SCION_SCHEDULER_SIGNING_KEY"
          value_source {
            secret_key_ref {
              secret  = env.value
              version = var.signing_key_secret_version
            }
          }
        }
      }

      # Ready once connected to Pub/Sub and Firestore; until then Cloud Run
      # keeps the previous revision's instances.
      startup_probe {
        http_get {
          path = "/readyz"
        }
        initial_delay_seconds = 0
        period_seconds        = 5
        timeout_seconds       = 2
        failure_threshold     = 24
      }

      # Restart an instance whose pull loop is wedged.
      liveness_probe {
        http_get {
          path = "/livez"
        }
        period_seconds    = 15
        timeout_seconds   = 3
        failure_threshold = 3
      }
    }
  }

  depends_on = [
    google_project_service.this,
    google_pubsub_subscription_iam_member.worker_subscriber,
    google_project_iam_member.worker_datastore_user,
    google_secret_manager_secret_iam_member.signing_key,
  ]
}
