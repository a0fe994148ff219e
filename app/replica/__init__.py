"""One real replica process (`edgestate replica`): its HTTP service, command line and event stream."""
