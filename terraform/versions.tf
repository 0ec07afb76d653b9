terraform {
  # 1.9 is the first release whose variable validations may refer to other
  # variables (e.g. retry_maximum_backoff_seconds >= retry_minimum_backoff_seconds).
  required_version = ">= 1.9"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 9.0"
    }
    # Only for google_project_service_identity, which makes sure the Pub/Sub
    # service agent exists before we grant it anything (the resource is beta-only).
    google-beta = {
      source  = "hashicorp/google-beta"
      version = ">= 6.0, < 9.0"
    }
  }
}
