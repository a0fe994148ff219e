"""The dashboard over real replica processes on this host (`serve --processes`)."""
