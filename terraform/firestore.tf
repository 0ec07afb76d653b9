resource "google_firestore_database" "this" {
  count = var.create_database ? 1 : 0

  project     = var.project_id
  name        = var.database_id
  location_id = coalesce(var.database_location, var.region)
  type        = "FIRESTORE_NATIVE"

  # Fires are claimed in transactions; optimistic concurrency fails a losing
  # replica's commit instead of making it wait on a lock.
  concurrency_mode            = "OPTIMISTIC"
  app_engine_integration_mode = "DISABLED"

  delete_protection_state = var.database_delete_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy         = var.database_deletion_policy

  depends_on = [google_project_service.this]
}

# Firestore deletes an execution document once its expire_at (a timestamp the
# worker writes) is in the past, so history does not grow without bound.
# expire_at keeps Firestore's default single-field indexes, so a query on it
# still works; fires are written far too slowly for index hot-spotting.
resource "google_firestore_field" "executions_ttl" {
  project    = var.project_id
  database   = local.database
  collection = local.executions_collection
  field      = "expire_at"

  ttl_config {}

  depends_on = [google_project_service.this]
}

# The history query, `where schedule_id == X order by fire_time desc`, filters
# on one field and orders by another, which Firestore can only serve from a
# composite index.
resource "google_firestore_index" "executions_history" {
  project     = var.project_id
  database    = local.database
  collection  = local.executions_collection
  query_scope = "COLLECTION"

  fields {
    field_path = "schedule_id"
    order      = "ASCENDING"
  }

  fields {
    field_path = "fire_time"
    order      = "DESCENDING"
  }

  depends_on = [google_project_service.this]
}

# The reaper's query, `where state == "running" and lease_until < now order by
# lease_until`: every replica runs it a few times per lease to find claims
# whose holder died (README, Failure model).
resource "google_firestore_index" "executions_lapsed" {
  project     = var.project_id
  database    = local.database
  collection  = local.executions_collection
  query_scope = "COLLECTION"

  fields {
    field_path = "state"
    order      = "ASCENDING"
  }

  fields {
    field_path = "lease_until"
    order      = "ASCENDING"
  }

  depends_on = [google_project_service.this]
}

# Ticks mode: the tick's due query on the schedule registry, `where owner == P
# and next_fire_time < T order by next_fire_time` (scheduler/ticks.py), filters
# on one field and ranges and orders on another: a composite index. The tick
# job publishes as the Cloud Scheduler service agent, like any job
# (scheduler_agent_publisher in pubsub.tf), and the worker that claims a tick
# publishes its fires with the publisher role it holds for the audit.
resource "google_firestore_index" "schedules_due" {
  count = var.mode == "ticks" ? 1 : 0

  project     = var.project_id
  database    = local.database
  collection  = local.schedules_collection
  query_scope = "COLLECTION"

  fields {
    field_path = "owner"
    order      = "ASCENDING"
  }

  fields {
    field_path = "next_fire_time"
    order      = "ASCENDING"
  }

  depends_on = [google_project_service.this]
}

# The audit's query, `where fire_time > a and fire_time <= b`, is one range on
# one field: Firestore's automatic single-field index on fire_time serves it,
# so it needs no composite index (README, The audit).

# A running execution keeps its contract message (up to 64 KiB) for the
# reaper; nothing queries it, so it is not indexed.
resource "google_firestore_field" "executions_message" {
  project    = var.project_id
  database   = local.database
  collection = local.executions_collection
  field      = "message"

  index_config {}

  depends_on = [google_project_service.this]
}
