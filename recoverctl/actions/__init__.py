"""Use cases. No click, boto3, docker or fabric imports here: they go through storage/deploy/sources."""
