"""What the API and the workers both need to know about the domain."""
