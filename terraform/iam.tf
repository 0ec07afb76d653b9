# ---------------------------------------------------------------------------
# Service accounts
# ---------------------------------------------------------------------------

# The hub's control module: reconciles schedules into Cloud Scheduler jobs and
# publishes manual runs. Skipped when the hub already has an identity.
resource "google_service_account" "hub" {
  count = var.hub_service_account_email == null ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name_prefix}-hub"
  display_name = "Scion scheduler control module (hub)"
  description  = "Manages the ${local.job_prefix}* Cloud Scheduler jobs and publishes manual runs to ${var.name_prefix}-fires."

  depends_on = [google_project_service.this]
}

# The workers: pull fires and claim them in Firestore. Nothing else.
resource "google_service_account" "worker" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-worker"
  display_name = "Scion scheduler worker"
  description  = "Pulls fires from ${var.name_prefix}-fires-workers and records executions in Firestore."

  depends_on = [google_project_service.this]
}

# ---------------------------------------------------------------------------
# Cloud Scheduler: job management for the hub
# ---------------------------------------------------------------------------

# Cloud Scheduler has no per-job IAM: roles can only be granted on the
# project. So instead of roles/cloudscheduler.admin this custom role carries
# exactly what the reconciler calls, and the job prefix (enforced in the code)
# keeps it off other jobs. Use a dedicated project for a hard boundary.
resource "google_project_iam_custom_role" "job_manager" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_scheduler_job_manager"
  title       = "Scion scheduler job manager"
  description = "Create, read, update, pause, resume, run and delete Cloud Scheduler jobs (the Scion control module)."
  permissions = [
    "cloudscheduler.jobs.create",
    "cloudscheduler.jobs.delete",
    "cloudscheduler.jobs.enable", # resume a paused schedule
    "cloudscheduler.jobs.fullView",
    "cloudscheduler.jobs.get",
    "cloudscheduler.jobs.list",
    "cloudscheduler.jobs.pause",
    "cloudscheduler.jobs.run", # force a run through Cloud Scheduler
    "cloudscheduler.jobs.update",
  ]

  depends_on = [google_project_service.this]
}

# Jobs mode only: in ticks mode the hub has no per-schedule job to manage.
resource "google_project_iam_member" "hub_job_manager" {
  count = var.mode == "jobs" ? 1 : 0

  project = var.project_id
  role    = google_project_iam_custom_role.job_manager.name
  member  = local.hub_member
}

moved {
  from = google_project_iam_member.hub_job_manager
  to   = google_project_iam_member.hub_job_manager[0]
}

# Ticks mode: the hub keeps one job, the tick ({job_prefix}_tick), created and
# repaired by every sync, and deletes the per-schedule jobs a migration leaves
# (scion-scheduler migrate --to ticks). No pause and no forced run: least
# privilege. Migrating back to jobs needs mode = "jobs" applied first.
resource "google_project_iam_custom_role" "tick_job_manager" {
  count = var.mode == "ticks" ? 1 : 0

  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_scheduler_tick_manager"
  title       = "Scion scheduler tick job manager"
  description = "Create, read, update, resume and delete the Scion control module's tick job (ticks mode)."
  permissions = [
    "cloudscheduler.jobs.create",
    "cloudscheduler.jobs.delete",
    "cloudscheduler.jobs.enable", # a paused tick job is resumed by the next sync
    "cloudscheduler.jobs.get",
    "cloudscheduler.jobs.list",
    "cloudscheduler.jobs.update",
  ]

  depends_on = [google_project_service.this]
}

resource "google_project_iam_member" "hub_tick_job_manager" {
  count = var.mode == "ticks" ? 1 : 0

  project = var.project_id
  role    = google_project_iam_custom_role.tick_job_manager[0].name
  member  = local.hub_member
}

# ---------------------------------------------------------------------------
# Firestore (its IAM is project-level only)
# ---------------------------------------------------------------------------

# Read/write documents: claim fires in transactions, record executions and
# schedule state. No index, database or admin permissions.
resource "google_project_iam_member" "worker_datastore_user" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = local.worker_member
}

# The control module writes the schedule registry the workers' audit reads
# (`{prefix}schedules`, README "The audit") and reads execution history.
resource "google_project_iam_member" "hub_datastore_user" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = local.hub_member
}

# ---------------------------------------------------------------------------
# Optional telemetry for workers outside Cloud Run
# ---------------------------------------------------------------------------

resource "google_project_iam_member" "worker_telemetry" {
  for_each = var.worker_telemetry_roles ? toset(["roles/logging.logWriter", "roles/monitoring.metricWriter"]) : toset([])

  project = var.project_id
  role    = each.value
  member  = local.worker_member
}

# ---------------------------------------------------------------------------
# Signing key: read access to the one secret, never its value
# ---------------------------------------------------------------------------

resource "google_secret_manager_secret_iam_member" "signing_key" {
  for_each = var.signing_key_secret != null ? {
    hub    = local.hub_member
    worker = local.worker_member
  } : {}

  secret_id = local.signing_key_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value

  depends_on = [google_project_service.this]
}
