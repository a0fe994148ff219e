"""`serve --attach`: the dashboard over replicas running elsewhere (`config`, `feed`, `cluster`)."""
