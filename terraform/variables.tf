# ---------------------------------------------------------------------------
# Where and what to call things
# ---------------------------------------------------------------------------

variable "project_id" {
  description = "Google Cloud project ID that holds the topic, subscription, database, jobs and service accounts (SCION_SCHEDULER_PROJECT)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID (6-30 characters: lowercase letters, digits and hyphens), not a project name or number."
  }
}

variable "region" {
  description = "Region of the Cloud Scheduler jobs (SCION_SCHEDULER_LOCATION) and of the worker Cloud Run service, e.g. europe-west1."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as us-central1 or europe-west1."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name this module creates. With the default \"scion\" the topic, subscription, job prefix and collection prefix match the code's defaults (scion-fires, scion-fires-workers, scion-, scion_)."
  type        = string
  default     = "scion"

  validation {
    # Service account IDs are 6-30 characters; the longest suffix used is "-worker".
    condition     = can(regex("^[a-z][a-z0-9-]{0,20}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 2-22 characters of lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "job_prefix" {
  description = "Prefix of the Cloud Scheduler job IDs the control module owns (SCION_SCHEDULER_JOB_PREFIX). Defaults to \"<name_prefix>-\". The control module never touches jobs without it."
  type        = string
  default     = null

  validation {
    # Mirrors Settings.validate in scheduler/config.py: an empty prefix would claim every job.
    condition     = var.job_prefix == null || (can(regex("^[A-Za-z0-9_-]+$", var.job_prefix)) && length(coalesce(var.job_prefix, "x")) <= 100)
    error_message = "job_prefix must be 1-100 characters of letters, digits, '-' and '_'."
  }
}

variable "collection_prefix" {
  description = "Prefix of the Firestore collections (<prefix>executions, <prefix>schedule_running, <prefix>schedule_state) (SCION_SCHEDULER_COLLECTION_PREFIX). Defaults to name_prefix with '-' replaced by '_', plus '_'."
  type        = string
  default     = null

  validation {
    condition     = var.collection_prefix == null || can(regex("^[A-Za-z0-9_-]*$", var.collection_prefix))
    error_message = "collection_prefix may hold only letters, digits, '-' and '_'."
  }
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = {}
}

variable "enable_apis" {
  description = "Enable the APIs this module needs (Cloud Scheduler, Pub/Sub, Firestore, IAM, and Cloud Run / Secret Manager when used). Turn off when a platform team enables APIs centrally."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------
# Pub/Sub
# ---------------------------------------------------------------------------

variable "ack_deadline_seconds" {
  description = "Initial ack deadline of the workers' subscription, in seconds. The client library extends it (by at most scion-worker's --max-lease-extension, 10 s) while a fire runs; this bounds how long a crashed worker holds fires it had not yet claimed before another replica gets them. Claimed fires are taken over from the ledger by the reaper whatever this is (README, Failure model)."
  type        = number
  default     = 10

  validation {
    condition     = var.ack_deadline_seconds >= 10 && var.ack_deadline_seconds <= 600 && floor(var.ack_deadline_seconds) == var.ack_deadline_seconds
    error_message = "ack_deadline_seconds must be a whole number from 10 to 600 (Pub/Sub's limits)."
  }
}

variable "message_retention_days" {
  description = "How long the workers' subscription keeps unacknowledged fires, in days. Fires older than a schedule's catch-up window are skipped by the workers anyway, so this only bounds an outage."
  type        = number
  default     = 7

  validation {
    condition     = var.message_retention_days >= 1 && var.message_retention_days <= 7 && floor(var.message_retention_days) == var.message_retention_days
    error_message = "message_retention_days must be a whole number from 1 to 7 (Pub/Sub keeps at most 7 days on a subscription)."
  }
}

variable "retry_minimum_backoff_seconds" {
  description = "Minimum delay before Pub/Sub redelivers a nacked or expired fire."
  type        = number
  default     = 10

  validation {
    condition     = var.retry_minimum_backoff_seconds >= 0 && var.retry_minimum_backoff_seconds <= 600
    error_message = "retry_minimum_backoff_seconds must be from 0 to 600."
  }
}

variable "retry_maximum_backoff_seconds" {
  description = "Maximum delay before Pub/Sub redelivers a nacked or expired fire (the backoff grows exponentially up to this)."
  type        = number
  default     = 600

  validation {
    condition     = var.retry_maximum_backoff_seconds >= 0 && var.retry_maximum_backoff_seconds <= 600 && var.retry_maximum_backoff_seconds >= var.retry_minimum_backoff_seconds
    error_message = "retry_maximum_backoff_seconds must be from 0 to 600 and at least retry_minimum_backoff_seconds."
  }
}

variable "max_delivery_attempts" {
  description = "Delivery attempts after which Pub/Sub moves a fire to the dead-letter topic. Keep it at least the largest max_attempts of any schedule, so the workers' own retry accounting ends first."
  type        = number
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100 && floor(var.max_delivery_attempts) == var.max_delivery_attempts
    error_message = "max_delivery_attempts must be a whole number from 5 to 100 (Pub/Sub's limits)."
  }
}

variable "dead_letter_retention_days" {
  description = "How long the dead-letter subscription keeps fires for inspection, in days."
  type        = number
  default     = 7

  validation {
    condition     = var.dead_letter_retention_days >= 1 && var.dead_letter_retention_days <= 7 && floor(var.dead_letter_retention_days) == var.dead_letter_retention_days
    error_message = "dead_letter_retention_days must be a whole number from 1 to 7."
  }
}

# ---------------------------------------------------------------------------
# Cloud Scheduler
# ---------------------------------------------------------------------------

variable "grant_scheduler_agent_publisher" {
  description = "Grant the Cloud Scheduler service agent roles/pubsub.publisher on the fires topic. Its project-level Cloud Scheduler Service Agent role already includes pubsub.topics.publish; this topic-level grant keeps fires flowing where that project binding was removed (e.g. by an authoritative project IAM policy)."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------
# Firestore
# ---------------------------------------------------------------------------

variable "create_database" {
  description = "Create the Firestore database. Set false to use an existing native-mode database named database_id (the TTL policy and index are still managed here)."
  type        = bool
  default     = true
}

variable "database_id" {
  description = "Firestore database ID (SCION_SCHEDULER_DATABASE)."
  type        = string
  default     = "(default)"

  validation {
    condition     = var.database_id == "(default)" || can(regex("^[a-z][a-z0-9-]{2,61}[a-z0-9]$", var.database_id))
    error_message = "database_id must be \"(default)\" or 4-63 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "database_location" {
  description = "Firestore location when the database is created: a region (defaults to region) or a multi-region such as nam5 or eur3."
  type        = string
  default     = null
}

variable "database_deletion_policy" {
  description = "What `terraform destroy` does to a database this module created: ABANDON (keep it, forget it) or DELETE."
  type        = string
  default     = "ABANDON"

  validation {
    condition     = contains(["ABANDON", "DELETE"], var.database_deletion_policy)
    error_message = "database_deletion_policy must be ABANDON or DELETE."
  }
}

variable "database_delete_protection" {
  description = "Turn on Firestore delete protection for a database this module creates."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------
# Identities
# ---------------------------------------------------------------------------

variable "hub_service_account_email" {
  description = "Email of an existing service account the hub (control module) runs as. When null, the module creates <name_prefix>-hub."
  type        = string
  default     = null

  validation {
    condition     = var.hub_service_account_email == null || can(regex("^[^@\\s]+@[a-z0-9.-]+\\.iam\\.gserviceaccount\\.com$", coalesce(var.hub_service_account_email, "x")))
    error_message = "hub_service_account_email must be a service account email (…@….iam.gserviceaccount.com)."
  }
}

variable "hub_runs_worker" {
  description = "The hub replicas also run the worker loop: grant the hub's service account the worker's permissions too (subscriber on the subscription; it holds roles/datastore.user already, for the registry) and add SCION_SCHEDULER_SUBSCRIPTION to hub_env."
  type        = bool
  default     = false
}

variable "worker_telemetry_roles" {
  description = "Also grant the worker roles/logging.logWriter and roles/monitoring.metricWriter. Not needed on Cloud Run, which collects stdout logs itself; needed where the worker writes logs through the Cloud Logging API or exports metrics (e.g. GKE or VMs with OpenTelemetry)."
  type        = bool
  default     = false
}

variable "signing_key_secret" {
  description = "Secret Manager secret holding the HMAC key that signs fire messages (SCION_SCHEDULER_SIGNING_KEY): a secret ID in project_id, or projects/P/secrets/S. The module grants access to it but never creates or reads the value. Null: messages are not signed."
  type        = string
  default     = null

  validation {
    condition     = var.signing_key_secret == null || can(regex("^(projects/[^/]+/secrets/)?[A-Za-z0-9_-]{1,255}$", coalesce(var.signing_key_secret, "x")))
    error_message = "signing_key_secret must be a secret ID or projects/PROJECT/secrets/SECRET."
  }
}

variable "signing_key_secret_version" {
  description = "Version of signing_key_secret the workers read: \"latest\" or a version number. Pin a number to roll keys deliberately."
  type        = string
  default     = "latest"

  validation {
    condition     = can(regex("^(latest|[0-9]+)$", var.signing_key_secret_version))
    error_message = "signing_key_secret_version must be \"latest\" or a version number."
  }
}

variable "log_format" {
  description = "Log output of the hub and workers (SCION_SCHEDULER_LOG_FORMAT): json (Cloud Logging), console or auto."
  type        = string
  default     = "json"

  validation {
    condition     = contains(["auto", "json", "console"], var.log_format)
    error_message = "log_format must be auto, json or console."
  }
}

variable "allowed_targets" {
  description = "Where actions may send requests (SCION_SCHEDULER_ALLOWED_TARGETS, set on the hub and the workers): URL prefixes, hosts, host patterns (*.run.app) or networks, e.g. the hub's https://hub.example.com/. Empty: any public address. Metadata, link-local, loopback and private addresses are refused unless named."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for t in var.allowed_targets : length(regexall("[,\\s]", t)) == 0 && t != ""])
    error_message = "Each allowed_targets entry is one non-empty target without commas or spaces."
  }
}

# ---------------------------------------------------------------------------
# Optional: the worker as a Cloud Run service
# ---------------------------------------------------------------------------

variable "deploy_worker" {
  description = "Deploy the worker (`scion-worker run`) as a Cloud Run service. Off by default: many deployments run the worker inside the hub replicas instead."
  type        = bool
  default     = false
}

variable "worker_image" {
  description = "Container image of the worker, e.g. europe-docker.pkg.dev/P/scion/scion-scheduler:1.2.3. Required when deploy_worker is true."
  type        = string
  default     = null

  validation {
    condition     = !var.deploy_worker || var.worker_image != null
    error_message = "worker_image is required when deploy_worker is true."
  }
}

variable "worker_min_instances" {
  description = "Minimum worker instances. At least 2, so one replica can fail or be replaced while the other keeps pulling fires."
  type        = number
  default     = 2

  validation {
    condition     = var.worker_min_instances >= 2 && floor(var.worker_min_instances) == var.worker_min_instances
    error_message = "worker_min_instances must be a whole number of at least 2 (high availability)."
  }
}

variable "worker_max_instances" {
  description = "Maximum worker instances. Pull workers do not scale on requests, so this is only a ceiling."
  type        = number
  default     = 4

  validation {
    condition     = var.worker_max_instances >= var.worker_min_instances && floor(var.worker_max_instances) == var.worker_max_instances
    error_message = "worker_max_instances must be a whole number of at least worker_min_instances."
  }
}

variable "worker_cpu" {
  description = "CPU limit of a worker instance (Cloud Run quantity, e.g. \"1\")."
  type        = string
  default     = "1"
}

variable "worker_processes" {
  description = "Worker processes per instance (scion-worker run --processes): one per whole CPU of worker_cpu, since a Python process runs its Python on one core at a time. Each holds about 130 MiB at a busy minute; raise worker_memory with it."
  type        = number
  default     = 1

  validation {
    condition     = var.worker_processes >= 1 && var.worker_processes <= 64 && floor(var.worker_processes) == var.worker_processes
    error_message = "worker_processes must be a whole number from 1 to 64."
  }
}

variable "worker_memory" {
  description = "Memory limit of a worker instance (Cloud Run quantity, e.g. \"512Mi\")."
  type        = string
  default     = "512Mi"
}

variable "worker_port" {
  description = "Container port of the worker's health server (/livez, /readyz). Cloud Run passes it to the container as PORT."
  type        = number
  default     = 8080

  validation {
    condition     = var.worker_port > 0 && var.worker_port < 65536
    error_message = "worker_port must be a TCP port number."
  }
}

variable "worker_deletion_protection" {
  description = "Provider-side deletion protection of the worker Cloud Run service. Workers are stateless, so it is off by default."
  type        = bool
  default     = false
}

variable "mode" {
  description = "Where the clock lives (SCION_SCHEDULER_MODE, set on the hub and the workers): jobs (one Cloud Scheduler job per schedule; the hub gets the job-manager role) or ticks (the schedules in Firestore, one tick job per deployment; the due query's composite index, and the hub may only manage the tick job). To move between modes see the README, Choosing a mode (scion-scheduler migrate)."
  type        = string
  default     = "jobs"

  validation {
    condition     = contains(["jobs", "ticks"], var.mode)
    error_message = "mode must be jobs or ticks."
  }
}
