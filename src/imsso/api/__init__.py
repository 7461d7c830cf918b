"""The faces: OCCI and JSON renderings of the same resources, served by one app."""
