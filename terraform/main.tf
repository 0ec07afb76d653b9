locals {
  job_prefix        = coalesce(var.job_prefix, "${var.name_prefix}-")
  collection_prefix = var.collection_prefix != null ? var.collection_prefix : "${replace(var.name_prefix, "-", "_")}_"

  # The collection the workers write one document per execution to; the TTL
  # policy and the history index both live on it.
  executions_collection = "${local.collection_prefix}executions"
  # The schedule registry (scheduler/registry.py): the audit reads it in both
  # modes, and in ticks mode it is the store of schedules the tick queries.
  schedules_collection = "${local.collection_prefix}schedules"

  database = var.create_database ? google_firestore_database.this[0].name : var.database_id

  hub_sa_email    = var.hub_service_account_email != null ? var.hub_service_account_email : google_service_account.hub[0].email
  hub_member      = "serviceAccount:${local.hub_sa_email}"
  worker_sa_email = google_service_account.worker.email
  worker_member   = "serviceAccount:${local.worker_sa_email}"

  # Google-managed service agents. Pub/Sub's comes from
  # google_project_service_identity, which also creates it on a fresh project.
  pubsub_agent_member    = "serviceAccount:${google_project_service_identity.pubsub.email}"
  scheduler_agent_member = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-cloudscheduler.iam.gserviceaccount.com"

  signing_key_secret = (
    var.signing_key_secret == null ? null :
    startswith(var.signing_key_secret, "projects/") ? var.signing_key_secret :
    "projects/${var.project_id}/secrets/${var.signing_key_secret}"
  )

  labels = merge({ "managed-by" = "terraform", "app" = "scion-scheduler" }, var.labels)

  # The same egress policy on the hub and the workers: validation refuses at
  # sync what the workers would refuse to send. Empty means any public address.
  allowed_targets = join(",", var.allowed_targets)

  # Environment of the workers. Every key is the `env` of an entry of SETTINGS
  # in scheduler/config.py (tests/test_terraform_env.py checks it). The signing
  # key is not here: it is a secret, read from Secret Manager (see worker.tf).
  # Emulator hosts are local-only and never set by Terraform.
  worker_env = {
    SCION_SCHEDULER_PROJECT           = var.project_id
    SCION_SCHEDULER_SUBSCRIPTION      = google_pubsub_subscription.workers.name
    SCION_SCHEDULER_TOPIC             = google_pubsub_topic.fires.name
    SCION_SCHEDULER_DATABASE          = local.database
    SCION_SCHEDULER_COLLECTION_PREFIX = local.collection_prefix
    SCION_SCHEDULER_LOG_FORMAT        = var.log_format
    SCION_SCHEDULER_ALLOWED_TARGETS   = local.allowed_targets
    SCION_SCHEDULER_MODE              = var.mode
  }

  # Environment of the hub's control module: where to put jobs and what they
  # publish to, plus Firestore for the history view...
  hub_env_control = {
    SCION_SCHEDULER_PROJECT           = var.project_id
    SCION_SCHEDULER_LOCATION          = var.region
    SCION_SCHEDULER_TOPIC             = google_pubsub_topic.fires.name
    SCION_SCHEDULER_JOB_PREFIX        = local.job_prefix
    SCION_SCHEDULER_DATABASE          = local.database
    SCION_SCHEDULER_COLLECTION_PREFIX = local.collection_prefix
    SCION_SCHEDULER_LOG_FORMAT        = var.log_format
    SCION_SCHEDULER_ALLOWED_TARGETS   = local.allowed_targets
    SCION_SCHEDULER_MODE              = var.mode
  }
  # ...and, when the hub replicas also run the worker loop, its subscription.
  hub_env_worker_loop = {
    SCION_SCHEDULER_SUBSCRIPTION = google_pubsub_subscription.workers.name
  }
  hub_env = merge(local.hub_env_control, var.hub_runs_worker ? local.hub_env_worker_loop : {})
}

data "google_project" "this" {
  project_id = var.project_id
}

# ---------------------------------------------------------------------------
# APIs
# ---------------------------------------------------------------------------

locals {
  services = toset(concat(
    [
      "cloudscheduler.googleapis.com",
      "pubsub.googleapis.com",
      "firestore.googleapis.com",
      "iam.googleapis.com",
      "cloudresourcemanager.googleapis.com",
    ],
    var.deploy_worker ? ["run.googleapis.com"] : [],
    var.signing_key_secret != null ? ["secretmanager.googleapis.com"] : [],
  ))
}

resource "google_project_service" "this" {
  for_each = var.enable_apis ? local.services : toset([])

  project = var.project_id
  service = each.value

  # Other workloads in the project may use these APIs: destroying this module
  # must never switch them off.
  disable_on_destroy         = false
  disable_dependent_services = false
}

# Makes sure the Pub/Sub service agent exists before it is granted anything:
# on a fresh project it may not have been created yet, and an IAM binding to a
# missing principal fails.
resource "google_project_service_identity" "pubsub" {
  provider = google-beta

  project = var.project_id
  service = "pubsub.googleapis.com"

  depends_on = [google_project_service.this]
}
