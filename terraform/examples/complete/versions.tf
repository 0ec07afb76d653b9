terraform {
  required_version = ">= 1.9"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 9.0"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = ">= 6.0, < 9.0"
    }
  }

  # Keep state out of the working tree in real deployments, e.g.:
  # backend "gcs" {
  #   bucket = "my-terraform-state"
  #   prefix = "scion-scheduler"
  # }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}
