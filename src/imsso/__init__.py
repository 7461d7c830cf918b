"""imsso: an IMS Service Orchestrator (OCCI and JSON faces, an engine of operations, drivers)."""
