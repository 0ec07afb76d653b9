variable "project_id" {
  description = "Google Cloud project to deploy the scheduler backend into."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Scheduler jobs, the Firestore database and the worker service."
  type        = string
  default     = "europe-west1"
}

variable "worker_image" {
  description = "Container image of scion-scheduler that provides the `scion-worker` command."
  type        = string
}

variable "allowed_targets" {
  description = "Where actions may send requests (SCION_SCHEDULER_ALLOWED_TARGETS): URL prefixes, hosts, host patterns or networks. Empty: any public address."
  type        = list(string)
  default     = ["https://hub.example.com/"]
}

variable "signing_key_secret" {
  description = "Existing Secret Manager secret ID holding the fire-signing HMAC key, or null to leave fires unsigned. Create it beforehand (see terraform/README.md); Terraform never sees the value."
  type        = string
  default     = null
}
