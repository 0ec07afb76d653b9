# The fires topic: every Cloud Scheduler job publishes here, and the hub
# publishes here for manual runs.
resource "google_pubsub_topic" "fires" {
  project = var.project_id
  name    = "${var.name_prefix}-fires"
  labels  = local.labels

  depends_on = [google_project_service.this]
}

# Fires that exhausted max_delivery_attempts land here instead of being
# redelivered forever.
resource "google_pubsub_topic" "dead_letter" {
  project = var.project_id
  name    = "${var.name_prefix}-fires-dead-letter"
  labels  = local.labels

  depends_on = [google_project_service.this]
}

# The workers' pull subscription. Every replica pulls from it; Pub/Sub hands a
# fire to one replica at a time, and the Firestore claim makes a redelivered
# fire run at most once.
resource "google_pubsub_subscription" "workers" {
  project = var.project_id
  name    = "${var.name_prefix}-fires-workers"
  topic   = google_pubsub_topic.fires.id
  labels  = local.labels

  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = "${var.message_retention_days * 86400}s"
  retain_acked_messages      = false

  # Duplicates are handled by the Firestore claim, so exactly-once delivery
  # (and its extra latency) is not needed.
  enable_exactly_once_delivery = false

  retry_policy {
    minimum_backoff = "${var.retry_minimum_backoff_seconds}s"
    maximum_backoff = "${var.retry_maximum_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  # Without this Pub/Sub deletes a subscription after 31 days without
  # subscribers, and fires published during a long outage would be lost.
  expiration_policy {
    ttl = ""
  }
}

# Somewhere for dead-lettered fires to wait: messages published to a topic
# without subscriptions are dropped. Nobody pulls it in normal operation, so it
# must not expire either.
resource "google_pubsub_subscription" "dead_letter" {
  project = var.project_id
  name    = "${var.name_prefix}-fires-dead-letter-sub"
  topic   = google_pubsub_topic.dead_letter.id
  labels  = local.labels

  ack_deadline_seconds       = 60
  message_retention_duration = "${var.dead_letter_retention_days * 86400}s"

  expiration_policy {
    ttl = ""
  }
}

# Dead-lettering is done by the Pub/Sub service agent
# (service-PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com), not by the
# workers. It must be able to publish the fire to the dead-letter topic and to
# acknowledge it on the source subscription; without these two grants the
# dead_letter_policy silently does nothing and poison fires are redelivered
# until retention expires.
resource "google_pubsub_topic_iam_member" "pubsub_agent_dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent_member
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_workers_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.workers.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent_member
}

# The workers only consume fires: subscriber on their subscription, nothing on
# the topic.
resource "google_pubsub_subscription_iam_member" "worker_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.workers.name
  role         = "roles/pubsub.subscriber"
  member       = local.worker_member
}

resource "google_pubsub_subscription_iam_member" "hub_subscriber" {
  count = var.hub_runs_worker ? 1 : 0

  project      = var.project_id
  subscription = google_pubsub_subscription.workers.name
  role         = "roles/pubsub.subscriber"
  member       = local.hub_member
}

# Manual runs ("run now") are published by the hub straight to the topic.
resource "google_pubsub_topic_iam_member" "hub_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.fires.name
  role    = "roles/pubsub.publisher"
  member  = local.hub_member
}

# The workers' audit publishes a slot that Cloud Scheduler or Pub/Sub never
# delivered to the topic again (README, The audit).
resource "google_pubsub_topic_iam_member" "worker_audit_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.fires.name
  role    = "roles/pubsub.publisher"
  member  = local.worker_member
}

# Cloud Scheduler publishes a Pub/Sub-target job's message as its service
# agent; the job carries no service account of its own. See the variable's
# description for why this is granted although the agent's project-level role
# normally covers it.
resource "google_pubsub_topic_iam_member" "scheduler_agent_publisher" {
  count = var.grant_scheduler_agent_publisher ? 1 : 0

  project = var.project_id
  topic   = google_pubsub_topic.fires.name
  role    = "roles/pubsub.publisher"
  member  = local.scheduler_agent_member

  depends_on = [google_project_service.this]
}
